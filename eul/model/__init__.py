"""The model wrapper (T5 or GPT-2 behind one interface), its tokenizer, full training and
memory measurement."""
