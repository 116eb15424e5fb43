"""The Transformer's descendants trained and used with aiayn: a sentence classifier (BERT's
recipe), a language model (GPT's), a Vision Transformer. The models are in aiayn.model.family."""
