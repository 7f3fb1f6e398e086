"""The WordPiece trainer is deterministic: same texts, same vocabulary, same tokenizer bytes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from models.text_encoder import SPECIAL_TOKENS, TextTokenizer
from models.wordpiece import train_vocab

CAPTIONS = [
    "Axial CT of the chest shows a 12-mm solid nodule in the right upper lobe.",
    "Frontal chest radiograph shows a moderate left pleural effusion. No pneumothorax is seen.",
    "Contrast-enhanced CT of the abdomen shows a hypodense liver mass and an enlarged spleen.",
    "Ground-glass opacity (GGO) in the left lung; the GGO is patchy.",
    "Centrilobular emphysema in both lungs. There is no evidence of consolidation.",
    "Arterial wall calcification of the aorta. A simple renal cyst in the right kidney.",
]

TRAIN_AND_SAVE = """
import sys
from models.text_encoder import TextTokenizer
texts = sys.stdin.read().splitlines()
TextTokenizer.train(texts, vocab_size=int(sys.argv[2]), context_length=32).save(sys.argv[1])
"""


def _train_in_subprocess(folder: Path, hash_seed: str, texts: list[str], vocab_size: int, repo: Path) -> None:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    subprocess.run([sys.executable, "-c", TRAIN_AND_SAVE, str(folder), str(vocab_size)], input="\n".join(texts),
                   text=True, cwd=repo, env=env, check=True, timeout=120)


def test_two_processes_with_other_hash_seeds_save_identical_tokenizers(tmp_path, repo_root):
    texts = CAPTIONS * 4
    for seed in ("1", "2"):
        _train_in_subprocess(tmp_path / seed, seed, texts, 150, repo_root)
    for name in ("tokenizer.json", "tokenizer_meta.json"):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes(), name
    assert TextTokenizer.load(tmp_path / "1", 32).vocab_size == 150


def test_vocabulary_does_not_depend_on_text_order():
    shuffled = CAPTIONS[::-1] + CAPTIONS[2:] + CAPTIONS[:2]
    assert (TextTokenizer.train(CAPTIONS * 2, 120, 32).tok.to_str()
            == TextTokenizer.train(shuffled, 120, 32).tok.to_str())


def test_vocabulary_layout_specials_then_characters_then_merges():
    vocab = train_vocab({"abab": 3, "abc": 1}, 100, SPECIAL_TOKENS)
    assert vocab[:5] == SPECIAL_TOKENS
    assert vocab[5:11] == ["a", "b", "c", "##a", "##b", "##c"]
    # ("a", "##b") occurs 7 times, ("##b", "##a") 3 times: the most frequent pair merges first
    assert vocab[11] == "ab"
    assert "##ab" in vocab and "abab" in vocab


def test_ties_go_to_the_older_pair():
    # every pair occurs once; ("x", "##y") holds the lowest ids, so it merges first
    vocab = train_vocab({"xy": 1, "yz": 1}, 9, [])
    assert vocab == ["x", "y", "z", "##y", "##z", "xy", "yz"]


def test_min_frequency_stops_merging():
    vocab = train_vocab({"ab": 2, "cd": 1}, 100, [], min_frequency=2)
    assert "ab" in vocab and "cd" not in vocab


def test_frequent_words_become_one_token_and_unknown_characters_map_to_unk():
    tok = TextTokenizer.train(CAPTIONS * 5, 400, 32)
    pieces = tok.tok.encode("Pleural effusion in the lung ✓").tokens
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    assert {"pleural", "effusion", "the", "lung"} <= set(pieces)
    assert "[UNK]" in pieces
    ids = tok.encode(["the lung"])["input_ids"][0]
    assert tok.tok.decode(ids.tolist()) == "the lung"
