"""taalm: Train-Attention (TAALM) — meta-learned token weights so language models learn new documents and forget less."""

__version__ = "0.1.0"
