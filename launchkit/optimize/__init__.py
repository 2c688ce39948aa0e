"""Optimized CPU inference without IPEX: dtype (bf16 / int8), channels-last, graph mode."""
