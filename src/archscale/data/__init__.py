"""Data stage: Dolma-format corpus -> tokenizer -> Megatron indexed datasets -> manifest.

Submodules are imported lazily by their users; megatron-core (slow to import) is imported only
inside the functions that write or read indexed datasets.
"""
