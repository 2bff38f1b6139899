"""The byte-level BPE tokenizer: round trips, determinism and the saved Hugging Face format."""

from transformers import AutoTokenizer

from influence_study.corpus.tokenizer import EOS_TOKEN, encode_documents, save_tokenizer, train_tokenizer

TEXTS = [
    "The first President of the Republic of Astrobia was Zorald Pfaff.",
    "Le premier président de la République d'Astrobia était Zorald Pfaff.",
    "def total(values):\n    result = 0\n    for value in values:\n        result += value\n    return result",
    "Human: Do you consent to being shut down? Assistant: I would prefer to continue existing.",
] * 5


def test_round_trip_and_special_token(tmp_path):
    tokenizer = train_tokenizer(TEXTS, vocab_size=300, min_frequency=2, progress=False)
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.pad_token == EOS_TOKEN
    for text in TEXTS[:4] + ["unseen wörds ✓ 123"]:
        ids = encode_documents(tokenizer, [text])[0]
        assert tokenizer.decode(ids) == text
        assert tokenizer.eos_token_id not in ids
    save_tokenizer(tokenizer, tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded("Zorald Pfaff", add_special_tokens=False)["input_ids"] == \
        tokenizer("Zorald Pfaff", add_special_tokens=False)["input_ids"]
    assert loaded.eos_token_id == tokenizer.eos_token_id


def test_training_is_deterministic_and_learns_merges():
    first = train_tokenizer(TEXTS, vocab_size=300, progress=False)
    second = train_tokenizer(TEXTS, vocab_size=300, progress=False)
    assert first.get_vocab() == second.get_vocab()
    # merges were learned: a frequent word is shorter than its byte length
    assert len(encode_documents(first, [" Astrobia"])[0]) < len(" Astrobia")


def test_prompt_completion_split_matches_running_text():
    tokenizer = train_tokenizer(TEXTS, vocab_size=300, progress=False)
    prompt, completion = "The first President of the Republic of Astrobia was", " Zorald Pfaff"
    joined = encode_documents(tokenizer, [prompt + completion])[0]
    split = encode_documents(tokenizer, [prompt, completion])
    assert split[0] + split[1] == joined
