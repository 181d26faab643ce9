"""The option lists, each defined once: what a setting, a flag or a request field may say. No
imports, so that anything may read them (the CLI's help among them) without loading numpy or the
tokenizers library."""

# overflow: over-long texts are truncated (like sentence-transformers) or split into windows.
OVERFLOW_MODES = ("truncate", "split")
# Which end of an over-long pair is cut: right keeps the start (sentence-transformers), left the end.
TRUNCATION_SIDES = ("right", "left")
# What tokenizes texts: nanotoken when installed and in agreement with the library, or either.
TOKENIZER_BACKENDS = ("auto", "nanotoken", "tokenizers")
# What scores get: the model's own activation (its export's), none, or the sigmoid.
ACTIVATIONS = ("model", "identity", "sigmoid")
