#!/usr/bin/env python3
"""Independent PyTorch reference for the minillama engine (CPU, float64).

Loads a llama2.c legacy checkpoint (or generates the deterministic random-weight model that
minillama::make_random_model builds for a seed), runs a few token sequences through a plain
PyTorch llama forward pass, and writes their logits as a small text file of golden values that
tests/test_engine_golden.cpp compares the C++ engine against (the test does not need PyTorch).

    python3 tools/reference.py --random 20261128 --config 64,96,3,4,2,-96,32 \
        --seqs 5,9,16 --out tests/data/engine_golden_a.txt
    python3 tools/reference.py --random 7 --config 64,96,2,4,2,64,40 --theta 500000 --rope-dim 8 \
        --seqs 6,23 --out tests/data/engine_golden_c.txt     # partial rotary
    python3 tools/reference.py --random 31 --config 64,96,4,4,2,-96,64 --sliding-window 7 \
        --local-layers 1,1,0,1 --softcap 2 --seqs 5,19,40 --out tests/data/engine_golden_d.txt  # hybrid
    python3 tools/reference.py --checkpoint model.bin --seqs 8 --out golden.txt

RoPE rotates ADJACENT pairs (x[2i], x[2i+1]) (llama2.c run.c): here via complex multiplication.
Hybrid attention: in a local layer with sliding window W the query at position p sees the keys
at positions k with p - k < W (HF Mistral/Gemma convention, as minillama::config::window and
tools/train.py); a soft-cap C maps the scaled scores s to C * tanh(s / C) before the mask and the
softmax (Gemma 2).
"""
import argparse
import math
import struct
import sys

import torch

MASK = (1 << 64) - 1


class SplitMix64:
    """Same generator and float mapping as minillama::splitmix64 / uniform_pm1."""

    def __init__(self, seed):
        self.s = seed & MASK

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def pm1(self, n):
        # k * 2^-23 - 1 with k = top 24 bits: exact in float32 and float64.
        return torch.tensor([((self.next() >> 40) - (1 << 23)) * 2.0 ** -23 for _ in range(n)], dtype=torch.float64)


def f32(t):
    return t.to(torch.float32)


def random_checkpoint(seed, cfg):
    """Weights in llama2.c file order, as float32 tensors (see minillama::make_random_model)."""
    dim, hidden, L, H, KV, vocab, seq_len = cfg
    shared = vocab > 0
    V = abs(vocab)
    hd = dim // H
    rng = SplitMix64(seed)
    inv = lambda n: float(torch.tensor(1.0 / math.sqrt(n), dtype=torch.float32))  # noqa: E731

    def lin(n, scale):
        return f32(rng.pm1(n) * scale)  # exact product in float64, one rounding to float32

    def norm(n):
        return f32(1.0 + 0.25 * rng.pm1(n))

    w = {}
    w["emb"] = lin(V * dim, 1.0).view(V, dim)
    w["rms_att"] = [norm(dim) for _ in range(L)]
    w["wq"] = [lin(dim * dim, inv(dim)).view(dim, dim) for _ in range(L)]
    w["wk"] = [lin(KV * hd * dim, inv(dim)).view(KV * hd, dim) for _ in range(L)]
    w["wv"] = [lin(KV * hd * dim, inv(dim)).view(KV * hd, dim) for _ in range(L)]
    w["wo"] = [lin(dim * dim, inv(dim)).view(dim, dim) for _ in range(L)]
    w["rms_ffn"] = [norm(dim) for _ in range(L)]
    w["w1"] = [lin(hidden * dim, inv(dim)).view(hidden, dim) for _ in range(L)]
    w["w2"] = [lin(dim * hidden, inv(hidden)).view(dim, hidden) for _ in range(L)]
    w["w3"] = [lin(hidden * dim, inv(dim)).view(hidden, dim) for _ in range(L)]
    w["rms_final"] = norm(dim)
    w["cls"] = w["emb"] if shared else lin(V * dim, inv(dim)).view(V, dim)
    return dict(dim=dim, hidden=hidden, L=L, H=H, KV=KV, V=V, seq_len=seq_len, shared=shared), w


def rope_freqs(hd, theta, rope_dim=None):
    """Angle per position of each adjacent pair: theta^(-2i/rope_dim) for i < rope_dim/2, else 0
    (partial rotary: the last hd - rope_dim dims carry no position)."""
    rd = hd if rope_dim is None else rope_dim
    i = torch.arange(0, hd, 2, dtype=torch.float64)
    return torch.where(i < rd, theta ** (-i / rd), torch.zeros_like(i))


def checkpoint_bytes(p, w, theta=10000.0, rope_dim=None):
    """The llama2.c legacy file for (p, w), freq_cis tables included."""
    out = [struct.pack("7i", p["dim"], p["hidden"], p["L"], p["H"], p["KV"], p["V"] if p["shared"] else -p["V"],
                       p["seq_len"])]
    put = lambda t: out.append(t.contiguous().to(torch.float32).numpy().tobytes())  # noqa: E731
    put(w["emb"])
    for k in ["rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3"]:
        for t in w[k]:
            put(t)
    put(w["rms_final"])
    hd = p["dim"] // p["H"]
    ang = torch.outer(torch.arange(p["seq_len"], dtype=torch.float64), rope_freqs(hd, theta, rope_dim))
    put(torch.cos(ang))
    put(torch.sin(ang))
    if not p["shared"]:
        put(w["cls"])
    return b"".join(out)


def load_checkpoint(path):
    data = open(path, "rb").read()
    dim, hidden, L, H, KV, vocab, seq_len = struct.unpack_from("7i", data, 0)
    shared = vocab > 0
    V = abs(vocab)
    hd = dim // H
    off = 28
    flat = torch.frombuffer(bytearray(data[28:]), dtype=torch.float32)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = math.prod(shape)
        t = flat[pos:pos + n].view(*shape).clone()
        pos += n
        return t

    w = {"emb": take(V, dim)}
    w["rms_att"] = [take(dim) for _ in range(L)]
    w["wq"] = [take(dim, dim) for _ in range(L)]
    w["wk"] = [take(KV * hd, dim) for _ in range(L)]
    w["wv"] = [take(KV * hd, dim) for _ in range(L)]
    w["wo"] = [take(dim, dim) for _ in range(L)]
    w["rms_ffn"] = [take(dim) for _ in range(L)]
    w["w1"] = [take(hidden, dim) for _ in range(L)]
    w["w2"] = [take(dim, hidden) for _ in range(L)]
    w["w3"] = [take(hidden, dim) for _ in range(L)]
    w["rms_final"] = take(dim)
    pos += seq_len * hd  # freq_cis_real + freq_cis_imag, [seq_len][hd/2] each
    w["cls"] = w["emb"] if shared else take(V, dim)
    assert off + 4 * pos == len(data), "file size does not match the header"
    return dict(dim=dim, hidden=hidden, L=L, H=H, KV=KV, V=V, seq_len=seq_len, shared=shared), w, data


def forward(p, w, tokens, theta=10000.0, eps=1e-5, rope_dim=None, windows=None, softcap=None):
    """Logits [T][V] in float64 for one sequence. windows: per layer sliding window W (0 or None:
    global causal attention; W > 0: query p sees keys k with p - k < W); softcap: C * tanh(s / C)
    on the scaled scores s (None: none)."""
    d = lambda t: t.to(torch.float64)  # noqa: E731
    dim, H, KV = p["dim"], p["H"], p["KV"]
    hd = dim // H
    T = len(tokens)
    x = d(w["emb"])[torch.tensor(tokens)]

    def rms(a, g):
        return a / torch.sqrt((a * a).mean(-1, keepdim=True) + eps) * d(g)

    freqs = rope_freqs(hd, theta, rope_dim)
    rot = torch.polar(torch.ones(T, hd // 2, dtype=torch.float64),
                      torch.outer(torch.arange(T, dtype=torch.float64), freqs))  # [T][hd/2]

    def rope(a, n):  # a: [T][n*hd]
        z = torch.view_as_complex(a.reshape(T, n, hd // 2, 2).contiguous())
        return torch.view_as_real(z * rot[:, None, :]).reshape(T, n * hd)

    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    idx = torch.arange(T)
    dist = idx[:, None] - idx[None, :]  # [query][key]: p - k
    for l in range(p["L"]):
        W = windows[l] if windows else 0
        mask = causal | (dist >= W) if W and W > 0 else causal
        xn = rms(x, w["rms_att"][l])
        q = rope(xn @ d(w["wq"][l]).T, H).view(T, H, hd).transpose(0, 1)
        k = rope(xn @ d(w["wk"][l]).T, KV).view(T, KV, hd).transpose(0, 1)
        v = (xn @ d(w["wv"][l]).T).view(T, KV, hd).transpose(0, 1)
        k = k.repeat_interleave(H // KV, dim=0)  # query head h reads kv head h // (H / KV)
        v = v.repeat_interleave(H // KV, dim=0)
        s = (q @ k.transpose(1, 2)) / math.sqrt(hd)
        if softcap is not None:
            s = softcap * torch.tanh(s / softcap)
        s = s.masked_fill(mask, float("-inf"))
        o = (torch.softmax(s, -1) @ v).transpose(0, 1).reshape(T, dim)
        x = x + o @ d(w["wo"][l]).T
        xn = rms(x, w["rms_ffn"][l])
        g = xn @ d(w["w1"][l]).T
        x = x + (torch.nn.functional.silu(g) * (xn @ d(w["w3"][l]).T)) @ d(w["w2"][l]).T
    return rms(x, w["rms_final"]) @ d(w["cls"]).T


def fnv1a64(b):
    h = 0xCBF29CE484222325
    for byte in b:
        h = ((h ^ byte) * 0x100000001B3) & MASK
    return h


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="llama2.c legacy checkpoint")
    src.add_argument("--random", type=int, metavar="SEED", help="generate minillama's random model for SEED")
    ap.add_argument("--config", default="64,96,3,4,2,-96,32",
                    help="dim,hidden,layers,heads,kv_heads,vocab(<0: unshared classifier),seq_len (with --random)")
    ap.add_argument("--write-checkpoint", help="also write the (generated) checkpoint here")
    ap.add_argument("--seqs", default="5,9,16", help="lengths of the token sequences")
    ap.add_argument("--token-seed", type=int, default=7, help="seed of the token sequences")
    ap.add_argument("--theta", type=float, default=10000.0)
    ap.add_argument("--rope-dim", type=int, default=None, help="rotated dims per head (default: all)")
    ap.add_argument("--sliding-window", type=int, default=0,
                    help="window W of the local layers (query p sees keys k with p - k < W); 0 = none")
    ap.add_argument("--local-layers", default=None,
                    help="with --sliding-window: per layer 1 (local) or 0 (global), e.g. 1,1,0,1 "
                         "(default: every layer local)")
    ap.add_argument("--softcap", type=float, default=None, help="attention logit soft-cap C (Gemma 2)")
    ap.add_argument("--out", required=True, help="golden logits file to write")
    a = ap.parse_args()

    if a.random is not None:
        cfg = [int(v) for v in a.config.split(",")]
        p, w = random_checkpoint(a.random, cfg)
        blob = checkpoint_bytes(p, w, a.theta, a.rope_dim)
        p2, w, _ = None, w, None
    else:
        p, w, blob = load_checkpoint(a.checkpoint)
    if a.sliding_window < 0:
        ap.error("--sliding-window: must be >= 0, got %d" % a.sliding_window)
    if a.local_layers is not None and a.sliding_window == 0:
        ap.error("--local-layers needs --sliding-window")
    local = [1] * p["L"] if a.local_layers is None else [int(v) for v in a.local_layers.split(",")]
    if len(local) != p["L"] or any(v not in (0, 1) for v in local):
        ap.error("--local-layers: %d values 0/1 expected, got %r" % (p["L"], a.local_layers))
    windows = [a.sliding_window if v else 0 for v in local]
    if a.softcap is not None and not (a.softcap > 0 and math.isfinite(a.softcap)):
        ap.error("--softcap: must be finite and > 0, got %r" % a.softcap)
    if a.write_checkpoint:
        open(a.write_checkpoint, "wb").write(blob)
    rng = SplitMix64(a.token_seed)
    lines = ["# golden logits from tools/reference.py (PyTorch %s, float64); do not edit" % torch.__version__,
             "source %s" % ("random %d" % a.random if a.random is not None else "checkpoint"),
             "config %d %d %d %d %d %d %d %d" % (p["dim"], p["hidden"], p["L"], p["H"], p["KV"], p["V"],
                                                p["seq_len"], 1 if p["shared"] else 0),
             "checkpoint %d %016x" % (len(blob), fnv1a64(blob)),
             "theta %.9g" % a.theta]
    if a.rope_dim is not None:
        lines.append("rope_dim %d" % a.rope_dim)
    if a.sliding_window > 0:
        lines.append("sliding_window %d" % a.sliding_window)
        lines.append("local_layers %s" % " ".join(map(str, local)))
    if a.softcap is not None:
        lines.append("softcap %.9g" % a.softcap)
    for n in [int(v) for v in a.seqs.split(",")]:
        toks = [rng.next() % p["V"] for _ in range(n)]
        lg = forward(p, w, toks, theta=a.theta, rope_dim=a.rope_dim, windows=windows, softcap=a.softcap)
        lines.append("sequence %d %s" % (n, " ".join(map(str, toks))))
        for row in lg.tolist():
            lines.append(" ".join("%.9g" % v for v in row))
    open(a.out, "w").write("\n".join(lines) + "\n")
    print("wrote %s (%d sequences)" % (a.out, len(a.seqs.split(","))), file=sys.stderr)


if __name__ == "__main__":
    main()
