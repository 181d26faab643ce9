"""The runtime's core: errors, option lists, request types, provider profiles, scores,
pure batching and the int8 fidelity metrics. Imports nothing above it."""
