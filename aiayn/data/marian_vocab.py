"""Marian's tokenizer files, as OPUS-MT models ship them (an external format; the paper's §5.1 has
one shared BPE model, `Tokenizer`): a SentencePiece model per side, `source.spm` and `target.spm`,
whose pieces one shared `vocab.json` (piece -> id) maps to the model's ids.

Encoding and decoding follow transformers' MarianTokenizer, the format's reference implementation:
a source piece missing from vocab.json is <unk>; decoding drops </s>, <pad> and <unk> (as its
`skip_special_tokens=True` does) and joins the target pieces back into raw text.

A checkpoint holds either `tokenizer.model` (aiayn's own) or these three files;
`load_tokenizer_files` and `save_tokenizer_files` pick by what is there.
"""
from __future__ import annotations

import json
from pathlib import Path

import sentencepiece as spm

from aiayn.data.tokenizer import Tokenizer, case_folds

SOURCE_SPM, TARGET_SPM, VOCAB_JSON = "source.spm", "target.spm", "vocab.json"
MARIAN_FILES = (SOURCE_SPM, TARGET_SPM, VOCAB_JSON)
TOKENIZER_MODEL = "tokenizer.model"
WORD_BOUNDARY = "\u2581"
# MarianTokenizer's defaults for these three; decoding leaves them out.
UNK, EOS, PAD = "<unk>", "</s>", "<pad>"


class MarianVocabTokenizer:
    """Raw text <-> ids through separate source and target SentencePiece models and one vocabulary.

    The same API as `Tokenizer` (encode, decode, pieces, vocab_size), except `save`, which takes
    a directory (three files) where `Tokenizer.save` takes a file.
    """

    def __init__(self, source_proto: bytes, target_proto: bytes, vocab: dict[str, int]):
        if not isinstance(vocab, dict) or not all(isinstance(p, str) and type(i) is int for p, i in vocab.items()):
            raise ValueError(f"{VOCAB_JSON}: not a JSON object of piece -> integer id")
        if UNK not in vocab:
            raise ValueError(f"{VOCAB_JSON}: no {UNK} piece")
        size = max(vocab.values()) + 1
        pieces: list[str | None] = [None] * size
        for piece, index in vocab.items():  # a repeated id keeps its last piece, as MarianTokenizer's decoder does
            if index < 0:
                raise ValueError(f"{VOCAB_JSON}: negative id {index} for {piece!r}")
            pieces[index] = piece
        if None in pieces:
            raise ValueError(f"{VOCAB_JSON}: ids are not 0..{size - 1} (id {pieces.index(None)} has no piece)")
        self.source_proto, self.target_proto = source_proto, target_proto
        self.source = spm.SentencePieceProcessor(model_proto=source_proto)
        self.target = spm.SentencePieceProcessor(model_proto=target_proto)
        self.vocab = vocab
        self.id_to_piece: list[str] = pieces  # type: ignore[assignment]  # no None left
        self.unk_id = vocab[UNK]
        self.skipped_ids = {vocab[p] for p in (UNK, EOS, PAD) if p in vocab}

    @property
    def lowercases(self) -> bool:
        """Whether the target model case-folds (so the model was trained to write lowercase)."""
        return case_folds(self.target)

    @classmethod
    def load(cls, directory: str | Path) -> "MarianVocabTokenizer":
        """Read source.spm, target.spm and vocab.json; errors name the file."""
        directory = Path(directory)
        vocab_path = directory / VOCAB_JSON
        try:
            vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{vocab_path}: corrupt JSON ({error})") from None
        protos = []
        for name in (SOURCE_SPM, TARGET_SPM):
            proto = (directory / name).read_bytes()
            try:
                spm.SentencePieceProcessor(model_proto=proto)
            except RuntimeError as error:
                raise ValueError(f"{directory / name}: not a SentencePiece model ({error})") from None
            protos.append(proto)
        try:
            return cls(protos[0], protos[1], vocab)
        except ValueError as error:
            raise ValueError(f"{directory}/{error}") from None

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        (directory / SOURCE_SPM).write_bytes(self.source_proto)
        (directory / TARGET_SPM).write_bytes(self.target_proto)
        (directory / VOCAB_JSON).write_text(json.dumps(self.vocab, ensure_ascii=False, indent=1), encoding="utf-8")

    @property
    def vocab_size(self) -> int:
        return len(self.id_to_piece)

    def _encode_one(self, text: str) -> list[int]:
        # A leading ">>xx<<" picks the target language of a multilingual model (MarianTokenizer's
        # remove_language_code): it is one vocabulary entry, not SentencePiece input.
        code: list[str] = []
        if text.startswith(">>") and (end := text.find("<<")) != -1:
            code, text = [text[: end + 2]], text[end + 2:]
        return [self.vocab.get(piece, self.unk_id) for piece in code + self.source.encode(text, out_type=str)]

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [self._encode_one(text) for text in texts]

    def encode_target(self, texts: list[str]) -> list[list[int]]:
        """Target-side text (a forced translation), segmented as the source is (the pieces map to
        the one shared vocabulary either way), as aiayn's attention maps have always done."""
        return self.encode(texts)

    def decode(self, ids: list[list[int]]) -> list[str]:
        """Raw text of output ids, from the target model's pieces (transformers' MarianTokenizer
        uses the source model for a shared vocabulary; the pieces' text is the same either way)."""
        return [self.target.decode_pieces([self.id_to_piece[i] for i in row if i not in self.skipped_ids])
                .replace(WORD_BOUNDARY, " ").strip() for row in ids]

    def pieces(self, ids: list[int]) -> list[str]:
        """The vocabulary pieces of ids, for labelling pictures (source and target share them)."""
        return [self.id_to_piece[i] for i in ids]


AnyTokenizer = Tokenizer | MarianVocabTokenizer


def load_tokenizer_files(directory: str | Path) -> AnyTokenizer:
    """The tokenizer a checkpoint directory holds: Marian's three files if present, else
    tokenizer.model. Errors (OSError, ValueError) name the file."""
    directory = Path(directory)
    if all((directory / name).is_file() for name in MARIAN_FILES):
        return MarianVocabTokenizer.load(directory)
    path = directory / TOKENIZER_MODEL
    try:
        return Tokenizer.load(path)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None


def save_tokenizer_files(tokenizer: AnyTokenizer, directory: str | Path) -> None:
    """Write the tokenizer's files into a checkpoint directory (read back by `load_tokenizer_files`)."""
    if isinstance(tokenizer, MarianVocabTokenizer):
        tokenizer.save(directory)
    else:
        tokenizer.save(Path(directory) / TOKENIZER_MODEL)
