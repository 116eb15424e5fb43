"""One shared subword vocabulary for source and target (§5.1, BPE), learned with SentencePiece."""
from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

# The special ids the model configuration expects (ModelConfig: pad 0, bos 1, eos 2).
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


class Tokenizer:
    """Raw text <-> subword ids with a SentencePiece BPE model.

    Byte fallback is on, so no character is ever unknown: a character outside the vocabulary
    becomes its UTF-8 bytes and decodes back to itself. Decoding joins pieces back into plain text,
    with no U+2581 word-boundary marks left over.
    """

    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self.processor = spm.SentencePieceProcessor(model_proto=model_proto)
        self._lowercases = case_folds(self.processor)
        if (self.processor.pad_id(), self.processor.bos_id(), self.processor.eos_id()) != (PAD_ID, BOS_ID, EOS_ID):
            raise ValueError("tokenizer model does not use pad 0, bos 1, eos 2")

    @classmethod
    def train(cls, sentences: Iterable[str], vocab_size: int, max_sentences: int = 2_000_000,
              seed: int = 1, symbols: tuple[str, ...] = (), lowercase: bool = False) -> "Tokenizer":
        """Learn a BPE vocabulary of about `vocab_size` pieces on the given (source + target) text.

        The sentences stream through SentencePiece, which keeps a random sample of at most
        `max_sentences` of them (reservoir sampling, seeded): any size of corpus fits in memory.
        `symbols` are pieces of their own (e.g. BERT's <mask>), ids 4, 5, ... after <unk>.
        `lowercase`: the model case-folds all text it encodes, in training and in use alike (its
        normalisation rule says so), as the Multi30k papers' lowercased data did."""
        model = io.BytesIO()
        spm.set_random_generator_seed(seed)
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=model,
            model_type="bpe", vocab_size=vocab_size, byte_fallback=True, character_coverage=1.0,
            pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
            input_sentence_size=max_sentences, shuffle_input_sentence=True,
            hard_vocab_limit=False, num_threads=2, minloglevel=2, user_defined_symbols=list(symbols),
            normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc")
        return cls(model.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        return cls(Path(path).read_bytes())

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.model_proto)

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    @property
    def lowercases(self) -> bool:
        """Whether this vocabulary case-folds its input (so its output is lowercase)."""
        return self._lowercases

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.processor.encode(texts)

    def encode_target(self, texts: list[str]) -> list[list[int]]:
        """Target-side text (a forced translation): one vocabulary for both sides (§3.4), so as `encode`."""
        return self.encode(texts)

    def decode(self, ids: list[list[int]]) -> list[str]:
        texts = self.processor.decode(ids)
        # A case-folding vocabulary still has byte pieces that spell capitals (<0x41> is "A").
        return [text.lower() for text in texts] if self._lowercases else texts

    def pieces(self, ids: list[int]) -> list[str]:
        """The subword pieces of ids, for labelling pictures."""
        return [self.processor.id_to_piece(i) for i in ids]


def case_folds(processor: spm.SentencePieceProcessor) -> bool:
    """Whether a SentencePiece model's normalisation lowercases text."""
    return processor.normalize("A") == processor.normalize("a")
