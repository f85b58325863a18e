"""Shared fixtures: tiny random checkpoints written with save_pretrained.

Nothing here downloads: the models are built from configs and saved to a
temporary directory, so tests run the real ``from_pretrained`` path offline.
"""

from __future__ import annotations

import os
import re
import string

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The default cache="memory" would serve a test's second call from the first
# one's token states, so a test comparing two settings would compare the cache
# with itself. A budget of 0 stores nothing; tests/test_cache.py gives its
# tests a real cache.
os.environ["SKBERT_CACHE_MB"] = "0"

WORDS = (
    "the a an of and to in is was it for on with as at by from this that here "
    "sentence i want bank vault robber river fishing money stealing "
    "after seen cat dog sat barked new york city naive can t e mail hello world"
).split()


# the shape of every tiny BERT-like checkpoint here
TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
)


def _vocab() -> list[str]:
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = ["##" + c for c in string.ascii_lowercase + string.digits]
    subwords = ["em", "##bed", "##ding", "##s", "##ing", "##ed"]
    vocab = special + chars + pieces + subwords
    vocab += [w for w in WORDS if w not in vocab]
    return vocab


def _save_tokenizer(
    directory, tokenizer_class_name: str, model_max_length: int | None = 64
) -> None:
    import transformers

    vocab = {token: i for i, token in enumerate(_vocab())}
    tokenizer_class = getattr(transformers, tokenizer_class_name)
    tokenizer = tokenizer_class(vocab=vocab, do_lower_case=True)
    if model_max_length is not None:  # None: a tokenizer saved without one
        tokenizer.model_max_length = model_max_length
    tokenizer.save_pretrained(directory)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """Path of a random 2-layer BERT (hidden 32) with a small WordPiece vocab."""
    import torch
    from transformers import BertConfig, BertModel

    directory = tmp_path_factory.mktemp("tiny-bert")
    _save_tokenizer(directory, "BertTokenizerFast")
    config = BertConfig(
        vocab_size=len(_vocab()),
        **TINY,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).eval().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory):
    """Path of a random 2-layer DistilBERT (dim 32), which takes no token_type_ids."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    directory = tmp_path_factory.mktemp("tiny-distilbert")
    _save_tokenizer(directory, "DistilBertTokenizerFast")
    config = DistilBertConfig(
        vocab_size=len(_vocab()),
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    DistilBertModel(config).eval().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    """Path of a random decoder-only model, which skbert must refuse."""
    from transformers import GPT2Config, GPT2Model

    directory = tmp_path_factory.mktemp("tiny-gpt2")
    _save_tokenizer(directory, "BertTokenizerFast")
    config = GPT2Config(vocab_size=len(_vocab()), n_embd=32, n_layer=2, n_head=2)
    GPT2Model(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def bundled_model():
    """Path of the real bundled model (all-MiniLM-L6-v2)."""
    from skbert._model import bundled_model_path

    return bundled_model_path()


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory):
    """Path of a random 2-layer RoBERTa with a small byte-level BPE, which keeps
    spaces and line ends as tokens of their own ("Ġ", "Ċ")."""
    import json

    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-roberta")
    corpus = ["the bank vault robber river fishing money cat dog sat barked"] * 20
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus,
        vocab_size=300,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe.save_model(str(directory))
    vocab = json.loads((directory / "vocab.json").read_text())
    lines = (directory / "merges.txt").read_text().splitlines()[1:]
    merges = [tuple(line.split()) for line in lines if line.strip()]
    tokenizer = RobertaTokenizerFast(vocab=vocab, merges=merges, trim_offsets=True)
    tokenizer.model_max_length = 64
    tokenizer.save_pretrained(directory)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        **TINY,
        max_position_embeddings=66,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    RobertaModel(config).eval().save_pretrained(directory)
    return directory


def _other_config(kind: str):
    """Tiny configs of encoders whose layers differ from BERT's in a way that
    matters to the layer hooks or to the position table."""
    import transformers

    common = dict(vocab_size=len(_vocab()), **TINY, pad_token_id=0)
    if kind == "modernbert":  # a final norm after the last layer
        return transformers.ModernBertConfig(
            **common,
            max_position_embeddings=64,
            local_attention=16,
            global_attn_every_n_layers=2,
            cls_token_id=2,
            sep_token_id=3,
            bos_token_id=2,
            eos_token_id=3,
        )
    deberta = dict(  # DeBERTa-v2's relative attention, as DeBERTa-v3 sets it
        **common,
        max_position_embeddings=64,
        type_vocab_size=0,
        relative_attention=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        max_relative_positions=-1,
    )
    if kind == "deberta_conv":  # a convolution after the first layer
        return transformers.DebertaV2Config(
            **deberta, position_buckets=32, conv_kernel_size=3, conv_act="gelu"
        )
    if kind == "albert":  # one layer, shared, run num_hidden_layers times
        return transformers.AlbertConfig(
            **common, embedding_size=16, max_position_embeddings=64
        )
    if kind == "funnel":  # pools tokens between blocks: refused
        return transformers.FunnelConfig(
            vocab_size=len(_vocab()),
            block_sizes=[1, 1],
            num_decoder_layers=1,
            d_model=32,
            n_head=2,
            d_head=16,
            d_inner=64,
        )
    if kind == "mpnet":  # positions counted from pad_token_id + 1
        return transformers.MPNetConfig(
            **common, max_position_embeddings=66, relative_attention_num_buckets=32
        )
    if kind == "electra":  # embeddings projected to the hidden size
        return transformers.ElectraConfig(
            **common, embedding_size=16, max_position_embeddings=64
        )
    if kind in ("xlm_roberta", "camembert"):  # RoBERTa's positions, another class
        config_class = {
            "xlm_roberta": transformers.XLMRobertaConfig,
            "camembert": transformers.CamembertConfig,
        }[kind]
        return config_class(**common, max_position_embeddings=66, type_vocab_size=1)
    if kind == "deberta_v3":  # relative attention with log buckets, no convolution
        return transformers.DebertaV2Config(
            **deberta,
            position_buckets=16,
            norm_rel_ebd="layer_norm",
            share_att_key=True,
        )
    if kind == "big_bird":  # block-sparse attention above 14 tokens here
        return transformers.BigBirdConfig(
            **common,
            max_position_embeddings=128,
            attention_type="block_sparse",
            block_size=2,
            num_random_blocks=1,
        )
    if kind == "perceiver":  # no num_hidden_layers, no hidden_size: refused
        return transformers.PerceiverConfig(
            vocab_size=len(_vocab()),
            num_latents=4,
            d_latents=16,
            d_model=32,
            num_blocks=1,
            num_self_attends_per_block=1,
            num_self_attention_heads=2,
            num_cross_attention_heads=2,
            max_position_embeddings=64,
        )
    if kind == "fnet":  # Fourier token mixing: padding changes every token
        return transformers.FNetConfig(
            vocab_size=len(_vocab()),
            hidden_size=32,
            num_hidden_layers=2,
            intermediate_size=64,
            max_position_embeddings=64,
            pad_token_id=0,
        )
    raise ValueError(kind)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory):
    """Build (once per kind) a random 2-layer encoder of another architecture
    with the WordPiece tokenizer of the others, saved without model_max_length:
    ``tiny_encoder("modernbert")``, ``"deberta_conv"``, ``"albert"``, ``"mpnet"``,
    ``"funnel"``, ``"fnet"``, ``"electra"``, ``"xlm_roberta"``, ``"camembert"``,
    ``"deberta_v3"``, ``"big_bird"``, ``"perceiver"``."""
    import torch
    from transformers import AutoModel

    built = {}

    def build(kind: str):
        if kind not in built:
            directory = tmp_path_factory.mktemp(f"tiny-{kind}")
            _save_tokenizer(directory, "BertTokenizerFast", model_max_length=None)
            torch.manual_seed(0)
            config = _other_config(kind)
            config.architectures = [f"{type(config).__name__[: -len('Config')]}Model"]
            model = AutoModel.from_config(config).eval()
            model.save_pretrained(directory)
            built[kind] = directory
        return built[kind]

    return build


@pytest.fixture(scope="session")
def tiny_sentencepiece(tmp_path_factory):
    """Build (once per kind) a random 2-layer ``"xlm_roberta"`` or
    ``"deberta_v3"`` with a sentencepiece tokenizer (Unigram, Metaspace)
    trained on a few words, so that "Bank" is read as the word marker "▁"
    alone, then "B", "ank"."""
    import torch
    import transformers
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import AutoModel

    built = {}
    # the tokenizer class, its first and last special tokens, unk, pad, mask
    specials = {
        "xlm_roberta": ("XLMRobertaTokenizerFast", "<s>", "</s>", "<unk>", "<pad>"),
        "deberta_v3": ("DebertaV2TokenizerFast", "[CLS]", "[SEP]", "[UNK]", "[PAD]"),
    }

    def build(kind: str):
        if kind not in built:
            class_name, first, last, unk, pad = specials[kind]
            mask = "<mask>" if first == "<s>" else "[MASK]"
            trainer = SentencePieceUnigramTokenizer()
            corpus = [" ".join(WORDS) + " Bank New York don't café 银行"] * 30
            trainer.train_from_iterator(
                corpus,
                vocab_size=120,
                special_tokens=[first, pad, last, unk, mask],
                unk_token=unk,
            )
            tokenizer = getattr(transformers, class_name)(
                tokenizer_object=trainer._tokenizer,
                bos_token=first,
                eos_token=last,
                cls_token=first,
                sep_token=last,
                unk_token=unk,
                pad_token=pad,
                mask_token=mask,
                model_max_length=64,
            )
            directory = tmp_path_factory.mktemp(f"tiny-sp-{kind}")
            tokenizer.save_pretrained(directory)
            torch.manual_seed(0)
            config = _other_config(kind)
            config.vocab_size = len(tokenizer)
            config.pad_token_id = tokenizer.pad_token_id
            config.architectures = [f"{type(config).__name__[: -len('Config')]}Model"]
            AutoModel.from_config(config).eval().save_pretrained(directory)
            built[kind] = directory
        return built[kind]

    return build


@pytest.fixture
def bar_counts():
    """Read tqdm's output: the (done, total) of every state a bar printed."""

    def counts(stderr: str) -> list[tuple[int, int]]:
        return [(int(a), int(b)) for a, b in re.findall(r"(\d+)/(\d+) \[", stderr)]

    return counts


ST_POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


@pytest.fixture
def st_config():
    """``write(directory, modes, max_seq_length=20)``: give the model saved in
    ``directory`` a sentence-transformers config (``modules.json``, then
    ``1_Pooling/config.json`` with the pooling ``modes`` such as
    ``["pooling_mode_mean_tokens"]``, and ``sentence_bert_config.json``)."""
    import json

    def write(directory, modes, max_seq_length=20):
        modules = [
            {
                "idx": 0,
                "name": "0",
                "path": "",
                "type": "sentence_transformers.models.Transformer",
            },
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
        ]
        (directory / "modules.json").write_text(json.dumps(modules))
        (directory / "1_Pooling").mkdir(exist_ok=True)
        pooling = {"word_embedding_dimension": TINY["hidden_size"]}
        if modes is not None:  # None: no mode named, sentence-transformers' default
            pooling.update({mode: mode in modes for mode in ST_POOLING_MODES})
        (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
        bert_config = {"max_seq_length": max_seq_length, "do_lower_case": False}
        (directory / "sentence_bert_config.json").write_text(json.dumps(bert_config))
        return directory

    return write
