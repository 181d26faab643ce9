"""Tokenizing: text encoders (nanotoken or the tokenizers library), pairs, windows.
Imports only the core."""
