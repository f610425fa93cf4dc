#!/usr/bin/env python3
"""Independent NumPy reader of a llama2.c checkpoint + tokenizer; measures retrieval accuracy.

    python3 tools/eval_model.py models/recall-6l            # full-cache accuracy on test.txt

It shares no code with the trainer's model: it parses the written bytes, uses the stored
freq_cis tables for the (adjacent-pair) rotary embedding and runs a full causal forward pass.
"""
import os
import struct
import sys

import numpy as np


def load_llama2c(path):
    with open(path, "rb") as f:
        raw = f.read()
    dim, hidden, L, H, KV, vocab, seq_len = struct.unpack("7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    hd = dim // H
    a = np.frombuffer(raw, dtype="<f4", offset=28)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        t = a[pos:pos + n].reshape(shape)
        pos += n
        return t

    m = dict(dim=dim, hidden=hidden, L=L, H=H, KV=KV, vocab=vocab, seq_len=seq_len, hd=hd)
    m["emb"] = take(vocab, dim)
    m["rms_att"] = take(L, dim)
    m["wq"] = take(L, H * hd, dim)
    m["wk"] = take(L, KV * hd, dim)
    m["wv"] = take(L, KV * hd, dim)
    m["wo"] = take(L, dim, H * hd)
    m["rms_ffn"] = take(L, dim)
    m["w1"] = take(L, hidden, dim)
    m["w2"] = take(L, dim, hidden)
    m["w3"] = take(L, hidden, dim)
    m["rms_final"] = take(dim)
    m["fcr"] = take(seq_len, hd // 2)
    m["fci"] = take(seq_len, hd // 2)
    m["wcls"] = m["emb"] if shared else take(vocab, dim)
    if pos != a.size:
        raise ValueError(f"{path}: {a.size - pos} trailing floats")
    return m


def load_tokenizer(path):
    with open(path, "rb") as f:
        raw = f.read()
    (maxlen,) = struct.unpack_from("i", raw, 0)
    off, toks = 4, []
    while off < len(raw):
        _score, n = struct.unpack_from("fi", raw, off)
        off += 8
        toks.append(raw[off:off + n].decode("utf-8"))
        off += n
    return toks


def _rms(x, w):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * w


def _rope(x, c, s):  # x [T][heads][hd]; c, s [T][hd/2]; rotate (x[2i], x[2i+1])
    a, b = x[..., 0::2], x[..., 1::2]
    c, s = c[:, None, :], s[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = a * s + b * c
    return out


def forward(m, ids):
    """Logits [T][vocab] of a full causal pass over ids (no cache)."""
    T = len(ids)
    H, KV, hd = m["H"], m["KV"], m["hd"]
    x = m["emb"][ids].astype(np.float32)
    c, s = m["fcr"][:T], m["fci"][:T]
    mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
    for l in range(m["L"]):
        h = _rms(x, m["rms_att"][l])
        q = _rope((h @ m["wq"][l].T).reshape(T, H, hd), c, s)
        k = _rope((h @ m["wk"][l].T).reshape(T, KV, hd), c, s)
        v = (h @ m["wv"][l].T).reshape(T, KV, hd)
        out = np.empty((T, H, hd), dtype=np.float32)
        for hh in range(H):
            kv = hh // (H // KV)
            att = q[:, hh, :] @ k[:, kv, :].T / np.sqrt(hd) + mask
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            out[:, hh, :] = att @ v[:, kv, :]
        x = x + out.reshape(T, H * hd) @ m["wo"][l].T
        h = _rms(x, m["rms_ffn"][l])
        a = h @ m["w1"][l].T
        x = x + ((a / (1 + np.exp(-a))) * (h @ m["w3"][l].T)) @ m["w2"][l].T
    return _rms(x, m["rms_final"]) @ m["wcls"].T


def recall_accuracy(m, vocab, eval_path):
    """Fraction of continuation queries "?KEYVAL;" whose VAL chars are all argmax-correct."""
    stoi = {t: i for i, t in enumerate(vocab)}
    import re
    qre = re.compile(r"\?[A-Z]+([0-9]+);")
    ok = tot = 0
    chars = ok_chars = 0
    with open(eval_path) as f:
        lines = [ln.rstrip("\n").split("\t") for ln in f if ln.strip()]
    for ctx, cont in lines:
        ids = [1] + [stoi[ch] for ch in ctx + cont]
        assert len(ids) <= m["seq_len"]
        pred = forward(m, np.array(ids[:-1])).argmax(-1)
        tgt = np.array(ids[1:])
        for mt in qre.finditer(cont):
            a, b = mt.span(1)
            a, b = a + len(ctx), b + len(ctx)
            good = pred[a:b] == tgt[a:b]
            ok += int(good.all())
            ok_chars += int(good.sum())
            chars += b - a
            tot += 1
    return dict(queries=tot, accuracy=round(ok / tot, 4), char_accuracy=round(ok_chars / chars, 4),
                sequences=len(lines), tokens_per_sequence=len(lines[0][0]) + len(lines[0][1]) + 1)


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "models/recall-6l"
    m = load_llama2c(os.path.join(d, "model.bin"))
    vocab = load_tokenizer(os.path.join(d, "tokenizer.bin"))
    for name in ["test.txt", "calib.txt"]:
        p = os.path.join(d, name)
        if os.path.exists(p):
            print(name, recall_accuracy(m, vocab, p))


if __name__ == "__main__":
    main()
