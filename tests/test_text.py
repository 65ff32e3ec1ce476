"""Tests of multidiff.nn.text: byte tokenizer, ByteTextEncoder, caption/label dropout, HFTextEncoder."""

from __future__ import annotations

import sys

import pytest
import torch

from multidiff.nn.layers import Attention
from multidiff.nn.text import (
    NULL_CAPTION,
    TEXT_ENCODER_PRESETS,
    ByteTextEncoder,
    ByteTextEncoderConfig,
    ByteTokenizer,
    HFTextEncoder,
    TextEncoder,
    load_text_encoder,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run faster on one thread than fighting for the shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TINY = ByteTextEncoderConfig(dim=32, depth=2, heads=2, mlp_ratio=2.0, max_length=24)


def _encoder(seed: int = 0, config: ByteTextEncoderConfig = TINY) -> ByteTextEncoder:
    torch.manual_seed(seed)
    return ByteTextEncoder(config).eval()


# ----------------------------------------------------------------------------------- tokenizer


def test_tokenizer_ids_and_mask() -> None:
    tok = ByteTokenizer(max_length=8)
    ids, mask = tok(["ab", "", "héllo"])
    # "héllo" is 6 UTF-8 bytes (é = c3 a9) plus the start token.
    assert ids.shape == (3, 7) and mask.shape == (3, 7) and mask.dtype == torch.bool
    assert ids[0, :3].tolist() == [257, ord("a") + 1, ord("b") + 1]
    assert mask.sum(1).tolist() == [3, 1, 7]
    assert ids[2, 2].item() == 0xC3 + 1 and ids[2, 3].item() == 0xA9 + 1
    assert (ids[~mask] == 0).all()
    long_ids, long_mask = tok(["x" * 100])
    assert long_ids.shape == (1, 8) and bool(long_mask.all())
    padded, pmask = tok(["ab"], pad_to=5)
    assert padded.tolist() == [[257, 98, 99, 0, 0]] and pmask.sum().item() == 3
    with pytest.raises(ValueError, match="pad_to"):
        tok(["abcd"], pad_to=2)
    with pytest.raises(ValueError, match="list of captions"):
        tok("abc")


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="heads"):
        ByteTextEncoderConfig(dim=30, heads=4)
    with pytest.raises(ValueError, match="max_length"):
        ByteTextEncoderConfig(max_length=0)
    with pytest.raises(ValueError, match="mlp_ratio"):
        ByteTextEncoderConfig(mlp_ratio=0.0)


# ----------------------------------------------------------------------------------- encoder


def test_shapes_mask_and_protocol() -> None:
    enc = _encoder()
    assert isinstance(enc, TextEncoder) and enc.dim == 32
    ctx, mask = enc.encode(["one", "", "twenty two"])
    assert ctx.shape == (3, 11, 32) and ctx.dtype == torch.float32
    assert mask.sum(1).tolist() == [4, 1, 11]
    assert torch.count_nonzero(ctx[~mask]) == 0  # padded rows are zero
    assert (ctx[mask].norm(dim=-1) > 0).all()
    # The null caption is one learned token, not an empty context.
    null_ctx, null_mask = enc.encode([NULL_CAPTION])
    assert null_mask.tolist() == [[True]] and null_ctx.abs().sum() > 0
    # Captions are cut to max_length tokens.
    ctx_long, mask_long = enc.encode(["y" * 200])
    assert ctx_long.shape == (1, 24, 32) and bool(mask_long.all())


def test_padding_invariance() -> None:
    enc = _encoder()
    alone, m_alone = enc.encode(["dog barks"])
    n = int(m_alone.sum())
    with_others, m_others = enc.encode(["a", "dog barks", "a much longer caption here"])
    padded, m_padded = enc.encode(["dog barks"], pad_to=24)
    assert m_others[1].sum() == n and m_padded.sum() == n
    torch.testing.assert_close(with_others[1, :n], alone[0, :n], rtol=0, atol=1e-5)
    torch.testing.assert_close(padded[0, :n], alone[0, :n], rtol=0, atol=1e-5)
    assert torch.count_nonzero(padded[0, n:]) == 0
    # Different captions give different contexts (the encoder is not constant).
    other, _ = enc.encode(["dog barked"])
    assert (other[0, :n] - alone[0, :n]).abs().max() > 1e-3


def test_deterministic_and_mode_independent() -> None:
    enc = _encoder()
    a, _ = enc.encode(["same words"])
    enc.train()
    b, _ = enc.encode(["same words"])
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_gradients_reach_every_parameter_and_only_used_bytes() -> None:
    enc = _encoder().train()
    ctx, mask = enc.encode(["ab", "ba", ""])
    loss = ctx.square().sum() + ctx.sum()
    loss.backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name != "embed.weight":
            assert p.grad.abs().sum() > 0, name
    g = enc.embed.weight.grad
    used = {ByteTokenizer.BOS, ord("a") + 1, ord("b") + 1}
    for i in range(ByteTokenizer.VOCAB_SIZE):
        assert (g[i].abs().sum() > 0) == (i in used), i  # the pad row and unused bytes get none


def test_learns_to_tell_captions_apart() -> None:
    """Trained with a pooled linear head, the encoder separates captions that share most bytes."""
    torch.manual_seed(0)
    cfg = ByteTextEncoderConfig(dim=32, depth=1, heads=2, mlp_ratio=2.0, max_length=16)
    enc = ByteTextEncoder(cfg)
    head = torch.nn.Linear(32, 1)
    words = ["seven", "eleven", "seventy", "even"]
    target = torch.tensor([0.0, 1.0, 2.0, 3.0])
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=1e-2)
    losses = []
    for _ in range(150):
        ctx, mask = enc.encode(words)
        pooled = ctx.sum(1) / mask.sum(1, keepdim=True)  # (B, D)
        loss = (head(pooled).squeeze(-1) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.01 * losses[0]


def test_context_feeds_masked_cross_attention() -> None:
    """The (context, mask) pair is what a backbone's cross-attention takes; padding does not leak."""
    enc = _encoder()
    torch.manual_seed(1)
    attn = Attention(16, 2, context_dim=enc.dim).eval()
    x = torch.randn(2, 5, 16)
    ctx, mask = enc.encode(["short", "a longer caption"])
    out = attn(x, ctx, mask=mask)
    ctx0, mask0 = enc.encode(["short"])
    out0 = attn(x[:1], ctx0, mask=mask0)
    torch.testing.assert_close(out[:1], out0, rtol=0, atol=1e-5)


def test_save_load_roundtrip(tmp_path) -> None:
    enc = _encoder(seed=3)
    enc.save_pretrained(tmp_path / "enc")
    loaded = ByteTextEncoder.from_pretrained(tmp_path / "enc").eval()
    assert loaded.config == enc.config
    a, ma = enc.encode(["hello", ""])
    b, mb = loaded.encode(["hello", ""])
    assert torch.equal(ma, mb)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    fresh = _encoder(seed=4)
    c, _ = fresh.encode(["hello", ""])
    assert (c - a).abs().max() > 1e-3  # the weights, not the init, made the match


def test_load_text_encoder_dispatches_on_the_folder(tmp_path, monkeypatch) -> None:
    enc = _encoder(seed=5)
    enc.save_pretrained(tmp_path / "byte")
    loaded = load_text_encoder(tmp_path / "byte")
    assert isinstance(loaded, ByteTextEncoder) and loaded.config == enc.config
    with pytest.raises(ValueError, match="does not exist"):
        load_text_encoder(tmp_path / "missing")
    # Anything else goes to transformers (here: missing, so the install hint).
    (tmp_path / "other").mkdir()
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match="pip install transformers"):
        load_text_encoder(tmp_path / "other")


def test_presets_build() -> None:
    for name, cfg in TEXT_ENCODER_PRESETS.items():
        assert cfg.dim % cfg.heads == 0, name
    ctx, _ = ByteTextEncoder(TEXT_ENCODER_PRESETS["tiny"]).encode(["x"])
    assert ctx.shape == (1, 2, 64)


# ----------------------------------------------------------------------------------- dropout


def test_hf_missing_transformers_message(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ImportError, match="pip install transformers"):
        HFTextEncoder.from_local(tmp_path)


def _tiny_clip_folder(transformers, path) -> None:
    """A randomly initialised CLIP text model and a byte-level BPE tokenizer without merges."""
    import json

    chars = [chr(c) for c in range(ord("!"), ord("~") + 1)]  # printable ASCII maps to itself in CLIP's BPE
    vocab_list = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(vocab_list)}
    path.mkdir()
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tok = transformers.CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    cfg = transformers.CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=40,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    torch.manual_seed(0)
    transformers.CLIPTextModel(cfg).save_pretrained(str(path))
    tok.save_pretrained(str(path))


def test_hf_clip_from_local(tmp_path) -> None:
    transformers = pytest.importorskip(
        "transformers", reason="transformers is an optional extra (pip install transformers)"
    )
    folder = tmp_path / "clip"
    _tiny_clip_folder(transformers, folder)
    enc = HFTextEncoder.from_local(folder, max_length=40)
    assert isinstance(enc, TextEncoder) and enc.dim == 32
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.model.training
    ctx, mask = enc.encode(["dog", "a dog barks", ""])
    assert ctx.shape[0] == 3 and ctx.shape[2] == 32 and mask.dtype == torch.bool
    # "dog" with no merges is d, o, g</w>, framed by start and end tokens.
    assert mask.sum(1).tolist() == [5, 11, 2]
    # Parity with the transformers model called directly.
    ref = transformers.CLIPTextModel.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.no_grad():
        ids = enc.tokenizer(["a dog barks"], return_tensors="pt")["input_ids"]
        want = ref(input_ids=ids).last_hidden_state
    torch.testing.assert_close(ctx[1:2, :11], want, rtol=1e-5, atol=1e-5)
    # CLIP attends causally, so a caption's real tokens do not depend on the batch's padding.
    alone, _ = enc.encode(["dog"])
    torch.testing.assert_close(ctx[0, :5], alone[0], rtol=1e-5, atol=1e-5)
    padded = HFTextEncoder.from_local(folder, max_length=40, pad_to_max_length=True)
    _, pmask = padded.encode(["dog"])
    assert pmask.shape == (1, 40) and pmask.sum().item() == 5


def test_hf_refuses_other_models(tmp_path) -> None:
    transformers = pytest.importorskip(
        "transformers", reason="transformers is an optional extra (pip install transformers)"
    )
    cfg = transformers.BertConfig(
        vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8
    )
    (tmp_path / "bert").mkdir()
    cfg.save_pretrained(str(tmp_path / "bert"))
    with pytest.raises(ValueError, match="'bert'"):
        HFTextEncoder.from_local(tmp_path / "bert")
    with pytest.raises(ValueError, match="not a folder"):
        HFTextEncoder.from_local(tmp_path / "missing")
