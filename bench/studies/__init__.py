"""Research studies: how the int8 recipes, the int8 gate and the CUDA overlap were chosen (bench/README.md)."""
