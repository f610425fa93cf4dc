// Decode-time budgets (decode.hpp): batch eviction against a naive one-at-a-time evictor (static
// scores: the same rows after every batch eviction, a superset between), dynamic scores (h2o)
// against a naive evictor with the same slack and a fresh prune at every eviction, slack 0 equal
// to enforce_budget, re-scoring every beta tokens equal to a fresh prune at those steps, budgets
// at every step (changing budgets, all granularities), the eviction period, decode_budget splits,
// no allocation per step in steady state, and errors that leave everything unchanged.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "catch.hpp"
#include "depthkv/decode.hpp"
#include "depthkv/depthkv.hpp"
#include "test_util.hpp"

using namespace depthkv;
using depthkv_test::dump_rows;
using depthkv_test::require_error;
using depthkv_test::rng;

#include "count_allocations.hpp"  // g_news: operator new calls so far

namespace {


template <class T>
std::vector<pos_t> positions_of(const kv_cache<T>& c, std::size_t l, std::size_t h) {
  const auto p = c.positions(l, h);
  return std::vector<pos_t>(p.begin(), p.end());
}

// One token's rows for every head: K random (a tie-prone coarse grid when `coarse`), V = (pos, h, ...).
struct token_rows {
  std::size_t H, d;
  std::vector<float> k, v;
  token_rows(std::size_t H_, std::size_t d_) : H(H_), d(d_), k(H_ * d_), v(H_ * d_) {}
  void make(pos_t pos, bool coarse = false) {
    std::normal_distribution<float> nd;
    for (std::size_t h = 0; h < H; ++h)
      for (std::size_t t = 0; t < d; ++t) {
        k[h * d + t] = coarse ? float(int(depthkv_test::uniform_int(0, 2))) : nd(rng());
        v[h * d + t] = t == 0 ? float(pos) : t == 1 ? float(h) : 0.f;
      }
  }
  template <class T>
  void append(kv_cache<T>& c, std::size_t l, pos_t pos) const {
    std::vector<T> kk(k.size()), vv(v.size());
    for (std::size_t i = 0; i < k.size(); ++i) kk[i] = T(k[i]), vv[i] = T(v[i]);
    c.append_token(l, kk.data(), vv.data(), pos);
  }
};

// A policy whose score is a fixed table entry per (layer, head, position): the "any score fixed
// per token" case, ties included.
struct table_policy {
  static constexpr const char* name = "table";
  std::size_t n_sink = 0;
  std::size_t n_recent = 0;
  const std::vector<float>* table = nullptr;  // [(layer * H + head) * P + position]
  std::size_t H = 1, P = 0;
  template <class T>
  void check(const head_input<T>&) const {}
  template <class T>
  void score(const head_input<T>& in, span<float> out, score_scratch&) const {
    for (std::size_t j = 0; j < in.keys.n; ++j)
      out[j] = (*table)[(in.layer * H + in.kv_head) * P + static_cast<std::size_t>(in.positions[j])];
  }
};
static_assert(is_scoring_policy_v<table_policy>, "the test policy satisfies the contract");

// The naive selection both references use: the first `sink` and last `recent` rows, then the
// best others by (score desc, position asc) up to `keep`; ascending row indices.
std::vector<std::size_t> naive_keep(const std::vector<float>& score, const std::vector<pos_t>& pos, std::size_t keep,
                                    std::size_t sink, std::size_t recent) {
  const std::size_t n = score.size();
  std::vector<std::size_t> sel, rest;
  for (std::size_t j = 0; j < n; ++j) (j < sink || j + recent >= n ? sel : rest).push_back(j);
  std::sort(rest.begin(), rest.end(), [&](std::size_t a, std::size_t b) {
    return score[a] != score[b] ? score[a] > score[b] : pos[a] < pos[b];
  });
  for (std::size_t i = 0; sel.size() < keep && i < rest.size(); ++i) sel.push_back(rest[i]);
  std::sort(sel.begin(), sel.end());
  return sel;
}

// A naive evictor of one head: tokens (position, score, h2o accumulation), evicting back to
// `budget` whenever it holds more than budget + slack (slack 0: one at a time).
struct ref_head {
  std::vector<pos_t> pos;
  std::vector<float> score;  // static score, or accumulated attention
  bool step(std::size_t budget, std::size_t slack, std::size_t sink, std::size_t recent) {
    if (pos.size() <= budget + slack) return false;
    const auto keep = naive_keep(score, pos, budget, sink, recent);
    std::vector<pos_t> p;
    std::vector<float> s;
    for (std::size_t j : keep) p.push_back(pos[j]), s.push_back(score[j]);
    pos = p;
    score = s;
    return true;
  }
};

// The score a policy gives one token alone (1 row): the static score of knorm, random, table.
template <class P>
float solo_score(const P& p, std::size_t l, std::size_t h, std::size_t H, const float* key, std::size_t d, pos_t pos) {
  head_input<float> in;
  in.layer = l;
  in.kv_head = h;
  in.n_kv_heads = H;
  in.keys = rows_view<const float>{key, 1, d, static_cast<std::ptrdiff_t>(d)};
  in.positions = span<const pos_t>(&pos, 1);
  float s = 0.f;
  score_scratch sc;
  p.score(in, span<float>(&s, 1), sc);
  return s;
}

// Deterministic attention weight of query step t (query head qh of kv head h) for the token at p.
float attn_weight(std::size_t t, pos_t p, std::size_t h, std::size_t qh) {
  std::uint64_t x = (std::uint64_t(t) << 40) ^ (std::uint64_t(std::uint32_t(p)) << 8) ^ (h << 4) ^ qh;
  x = random_policy::mix(x);
  return float(x >> 40) * (1.f / 16777216.f) + 1e-3f;
}

// Attention rows of step t over the given positions (one per query head of the group), softmax-like
// normalised, as an engine would feed them.
std::vector<std::vector<float>> attn_rows(std::size_t t, const std::vector<pos_t>& pos, std::size_t h, std::size_t G) {
  std::vector<std::vector<float>> rows(G, std::vector<float>(pos.size()));
  for (std::size_t qh = 0; qh < G; ++qh) {
    float s = 0.f;
    for (std::size_t j = 0; j < pos.size(); ++j) s += (rows[qh][j] = attn_weight(t, pos[j], h, qh));
    for (auto& x : rows[qh]) x /= s;
  }
  return rows;
}

struct static_case {
  std::string name;
  std::size_t budget, sink, recent, prefill;
  decode_slack slack;
  bool shrink = false;  // the budget falls by one every 10 steps, down to sink + recent + 1
};

}  // namespace

TEST_CASE("decode_slack: tokens, fractions of the budget, saturation", "[decode]") {
  CHECK(decode_slack::tokens(7).rows(0) == 7);
  CHECK(decode_slack::tokens(7).rows(1000) == 7);
  CHECK_FALSE(decode_slack::tokens(7).is_fraction());
  const auto f = decode_slack::fraction(decode_slack::default_fraction);
  CHECK(f.is_fraction());
  CHECK(f.rows(4096) == 256);
  CHECK(f.rows(16384) == 1024);
  CHECK(f.rows(100) == 7);  // ceil(6.25)
  CHECK(f.rows(0) == 0);
  CHECK(decode_slack::fraction(0.0).rows(12345) == 0);
  CHECK(decode_slack::fraction(1e300).rows(5) == std::numeric_limits<std::size_t>::max());
  decode_evictor<knorm> e(layers{1}, knorm{}, decode_options{});
  CHECK(e.slack(64) == 4);
  CHECK(e.limit(64) == 68);
  CHECK(e.limit(std::numeric_limits<std::size_t>::max()) == std::numeric_limits<std::size_t>::max());
  require_error([] { decode_slack::fraction(-0.1); }, {"fraction -0.1", "finite and >= 0"});
  require_error([] { decode_slack::fraction(std::nan("")); }, {"fraction"});
  require_error([] { decode_slack::fraction(std::numeric_limits<double>::infinity()); }, {"fraction inf"});
}

TEST_CASE("static scores: batch eviction keeps exactly the one-at-a-time evictor's rows after every eviction, a superset between",
          "[decode]") {
  const std::size_t L = 2, H = 2, d = 4, steps = 150;
  const std::vector<static_case> cases = {
      {"no protection, slack 1", 6, 0, 0, 0, decode_slack::tokens(1)},
      {"sinks + recent, slack 5", 12, 2, 3, 0, decode_slack::tokens(5)},
      {"sinks + recent, default fraction", 40, 3, 4, 0, decode_slack::fraction(decode_slack::default_fraction)},
      {"half the budget, prefill beyond the limit", 16, 1, 2, 50, decode_slack::fraction(0.5)},
      {"slack 0", 9, 2, 2, 5, decode_slack::tokens(0)},
      {"shrinking budget, slack 4", 30, 2, 3, 0, decode_slack::tokens(4), true},
      {"shrinking budget, a third of it", 40, 1, 1, 10, decode_slack::fraction(0.34), true},
  };
  // Tie-prone table scores (four values) and coarse keys (knorm ties) exercise the tie order.
  std::vector<float> table(L * H * (steps + 64));
  for (auto& x : table) x = float(depthkv_test::uniform_int(0, 3));
  for (const auto& c : cases) {
    for (int kind = 0; kind < 4; ++kind) {
      const char* kinds[] = {"knorm", "random", "streaming", "table"};
      INFO(c.name << ", policy " << kinds[kind]);
      const auto run = [&](auto policy, auto ref_score) {
        policy.n_sink = c.sink;
        policy.n_recent = c.recent;
        decode_options opt;
        opt.slack = c.slack;
        decode_evictor<decltype(policy)> ev(layers{L}, policy, opt);
        const std::size_t S = ev.slack(c.budget);
        kv_cache<float> cache(layers{L}, heads{H}, dim{d}, std::max(c.prefill, c.budget + S + 1));
        std::vector<ref_head> ref(L * H);  // one-at-a-time
        prune_workspace ws;
        token_rows tok(H, d);
        std::size_t evictions = 0;
        for (std::size_t t = 0; t < c.prefill + steps; ++t) {
          tok.make(pos_t(t), kind == 0);
          for (std::size_t l = 0; l < L; ++l) {
            tok.append(cache, l, pos_t(t));
            for (std::size_t h = 0; h < H; ++h) {
              ref[l * H + h].pos.push_back(pos_t(t));
              ref[l * H + h].score.push_back(ref_score(policy, l, h, tok.k.data() + h * d, pos_t(t)));
            }
          }
          if (t + 1 < c.prefill) continue;  // the prompt: appended before the first step
          const std::size_t B = c.shrink ? std::max(c.budget - std::min(c.budget, t / 10), c.sink + c.recent + 1) : c.budget;
          const std::size_t SB = ev.slack(B);
          for (std::size_t l = 0; l < L; ++l) {
            const std::size_t before = cache.max_length(l);
            const decode_action a = ev.step(cache, l, B, ws);
            REQUIRE((a == decode_action::over_limit) == (before > B + SB));
            for (std::size_t h = 0; h < H; ++h) {
              ref_head& r = ref[l * H + h];
              while (r.step(B, 0, c.sink, c.recent)) {
              }
              const auto got = positions_of(cache, l, h);
              REQUIRE(got.size() <= B + SB);
              if (a != decode_action::none) {
                ++evictions;
                REQUIRE(got.size() == B);
                REQUIRE(got == r.pos);  // exactly the one-at-a-time evictor's rows
              } else {
                REQUIRE(std::includes(got.begin(), got.end(), r.pos.begin(), r.pos.end()));  // a superset
                REQUIRE(got.size() - r.pos.size() <= SB);
              }
            }
          }
        }
        CHECK(evictions > 0);
      };
      const auto solo = [&](const auto& p, std::size_t l, std::size_t h, const float* key, pos_t pos) {
        return solo_score(p, l, h, H, key, d, pos);
      };
      if (kind == 0) run(knorm{}, solo);
      if (kind == 1) run(random_policy{0, 0, 42}, solo);
      if (kind == 2) run(streaming{}, [](const auto&, std::size_t, std::size_t, const float*, pos_t pos) { return float(pos); });
      if (kind == 3) {
        table_policy p;
        p.table = &table;
        p.H = H;
        p.P = steps + 64;
        run(p, solo);
      }
    }
  }
}

TEST_CASE("slack 0 is enforce_budget (the one-at-a-time loop); enforce_options' slack is the evictor's", "[decode]") {
  const std::size_t H = 2, G = 2, d = 8, w = 3, budget = 10, steps = 80;
  std::normal_distribution<float> nd;
  for (std::size_t slack : {std::size_t{0}, std::size_t{4}}) {
    for (int kind = 0; kind < 4; ++kind) {
      INFO("slack " << slack << " policy " << kind);
      kv_cache<float> a(layers{1}, heads{H}, dim{d}, budget + slack + 1), b = a;
      h2o_state sa(1, H), sb(1, H);
      prune_workspace ws;
      token_rows tok(H, d);
      std::vector<float> q(H * G * w * d);
      decode_options opt;
      opt.slack = decode_slack::tokens(slack);
      const auto go = [&](auto pa, auto pb) {
        decode_evictor<decltype(pa)> ev(layers{1}, pa, opt);
        for (std::size_t t = 0; t < steps; ++t) {
          tok.make(pos_t(t));
          tok.append(a, 0, pos_t(t));
          tok.append(b, 0, pos_t(t));
          for (auto& x : q) x = nd(rng());
          const window_queries wq = window_queries::dense(q.data(), kv_shape(heads{H * G}, tokens{w}, dim{d}));
          const std::vector<pos_t> qpos = {pos_t(t) - 2, pos_t(t) - 1, pos_t(t)};
          const layer_queries lq{wq, t >= 2 ? span<const pos_t>(qpos) : span<const pos_t>{}};
          for (std::size_t h = 0; h < H && kind == 0; ++h) {
            for (const auto& row : attn_rows(t, positions_of(a, 0, h), h, G)) sa.accumulate(0, h, row);
            for (const auto& row : attn_rows(t, positions_of(b, 0, h), h, G)) sb.accumulate(0, h, row);
          }
          const bool ea = ev.step(a, 0, budget, ws, lq) != decode_action::none;
          const bool eb = slack == 0 ? enforce_budget(b, 0, budget, pb, ws, lq)
                                     : enforce_budget(b, 0, budget, enforce_options{slack}, pb, ws, lq);
          REQUIRE(ea == eb);
          REQUIRE(dump_rows(a) == dump_rows(b));
          for (std::size_t h = 0; h < H; ++h) {
            const auto x = sa.scores(0, h), y = sb.scores(0, h);
            REQUIRE(std::vector<float>(x.begin(), x.end()) == std::vector<float>(y.begin(), y.end()));
          }
        }
      };
      if (kind == 0) go(h2o{1, 2, &sa}, h2o{1, 2, &sb});
      if (kind == 1) go(tova{1, 1}, tova{1, 1});
      if (kind == 2) {
        snapkv s;
        s.n_sink = 1;
        s.n_recent = 3;
        s.kernel = 3;
        go(s, s);
      }
      if (kind == 3) go(knorm{2, 0}, knorm{2, 0});
    }
  }
}

TEST_CASE("h2o with slack: every eviction is a fresh prune of the rows held, as a naive same-slack evictor fed the same attention",
          "[decode]") {
  const std::size_t L = 2, H = 2, G = 2, d = 4, steps = 200;
  struct cfg {
    std::size_t budget, slack, sink, recent;
  };
  for (const cfg c : {cfg{8, 3, 0, 0}, cfg{16, 5, 2, 3}, cfg{12, 12, 1, 1}}) {
    INFO("budget " << c.budget << " slack " << c.slack);
    kv_cache<float> cache(layers{L}, heads{H}, dim{d}, c.budget + c.slack + 1);
    h2o_state st(L, H);
    decode_options opt;
    opt.slack = decode_slack::tokens(c.slack);
    decode_evictor<h2o> ev(layers{L}, h2o{c.sink, c.recent, &st}, opt);
    std::vector<ref_head> same(L * H), one(L * H);  // naive: the same slack, and one at a time
    prune_workspace ws, ws2;
    token_rows tok(H, d);
    std::size_t evictions = 0, differ = 0;
    for (std::size_t t = 0; t < steps; ++t) {
      tok.make(pos_t(t));
      for (std::size_t l = 0; l < L; ++l) {
        tok.append(cache, l, pos_t(t));
        for (std::size_t h = 0; h < H; ++h) {
          for (const auto& row : attn_rows(t * L + l, positions_of(cache, l, h), h, G)) st.accumulate(l, h, row);
          for (auto* r : {&same[l * H + h], &one[l * H + h]}) {
            r->pos.push_back(pos_t(t));
            r->score.push_back(0.f);
            const auto rows = attn_rows(t * L + l, r->pos, h, G);
            for (const auto& row : rows)
              for (std::size_t j = 0; j < row.size(); ++j) r->score[j] += row[j];
          }
        }
        // The fresh prune the step must equal when it evicts.
        kv_cache<float> fresh = cache;
        h2o_state fresh_state = st;
        prune_layer(fresh, l, c.budget, h2o{c.sink, c.recent, &fresh_state}, ws2);
        const decode_action a = ev.step(cache, l, c.budget, ws);
        if (a != decode_action::none) {
          ++evictions;
          REQUIRE(dump_rows(cache) == dump_rows(fresh));
        }
        for (std::size_t h = 0; h < H; ++h) {
          same[l * H + h].step(c.budget, c.slack, c.sink, c.recent);
          one[l * H + h].step(c.budget, 0, c.sink, c.recent);
          const auto got = positions_of(cache, l, h);
          REQUIRE(got == same[l * H + h].pos);
          const auto s = st.scores(l, h);
          REQUIRE(std::vector<float>(s.begin(), s.end()) == same[l * H + h].score);
          if (a != decode_action::none && got != one[l * H + h].pos) ++differ;
        }
      }
    }
    CHECK(evictions > 10);
    // Accumulated attention: batching changes the kept tokens. (Without protected recent rows a
    // new token, with one step of attention, loses to the old ones under either evictor.)
    if (c.recent > 0) CHECK(differ > 0);
  }
}

TEST_CASE("h2o: a token the one-at-a-time evictor drops can gain attention and survive a batch eviction", "[decode]") {
  // Budget 2, no protection. Attention fed per step, by position: step 0 {0: 1}, step 1 {1: 2},
  // step 2 nothing, step 3 {2: 5}. One at a time: step 2 drops position 2 (score 0), step 3
  // drops position 3: keeps {0, 1}. Slack 1: holds {0, 1, 2} at step 2, position 2 gains 5 at
  // step 3, the eviction keeps the top two of {0: 1, 1: 2, 2: 5, 3: 0}: {1, 2}.
  const std::vector<std::vector<std::pair<pos_t, float>>> feed = {{{0, 1.f}}, {{1, 2.f}}, {}, {{2, 5.f}}};
  std::vector<std::vector<pos_t>> kept;
  for (std::size_t slack : {std::size_t{0}, std::size_t{1}}) {
    kv_cache<float> cache(layers{1}, heads{1}, dim{2}, 4);
    h2o_state st(1, 1);
    decode_options opt;
    opt.slack = decode_slack::tokens(slack);
    decode_evictor<h2o> ev(layers{1}, h2o{0, 0, &st}, opt);
    prune_workspace ws;
    const float k[2] = {1.f, 0.f}, v[2] = {0.f, 0.f};
    for (std::size_t t = 0; t < feed.size(); ++t) {
      cache.append_token(0, k, v, pos_t(t));
      const auto pos = positions_of(cache, 0, 0);
      std::vector<float> row(pos.size(), 0.f);
      for (const auto& [p, x] : feed[t])
        for (std::size_t j = 0; j < pos.size(); ++j)
          if (pos[j] == p) row[j] = x;
      st.accumulate(0, 0, row);
      ev.step(cache, 0, 2, ws);
    }
    kept.push_back(positions_of(cache, 0, 0));
  }
  CHECK(kept[0] == std::vector<pos_t>{0, 1});
  CHECK(kept[1] == std::vector<pos_t>{1, 2});
}

TEST_CASE("re-scoring every beta tokens equals a fresh prune at those steps; queries needed only when due", "[decode]") {
  const std::size_t L = 2, H = 2, G = 2, d = 8, w = 4, budget = 24, steps = 120;
  std::normal_distribution<float> nd;
  struct cfg {
    std::size_t beta, slack;
  };
  for (const cfg c : {cfg{6, 100}, cfg{6, 3}, cfg{1, 50}, cfg{7, 0}}) {
    for (int kind = 0; kind < 2; ++kind) {
      INFO("beta " << c.beta << " slack " << c.slack << " policy " << (kind == 0 ? "snapkv" : "tova"));
      decode_options opt;
      opt.slack = decode_slack::tokens(c.slack);
      opt.rescore_every = c.beta;
      const auto go = [&](auto policy) {
        decode_evictor<decltype(policy)> ev(layers{L}, policy, opt);
        kv_cache<float> cache(layers{L}, heads{H}, dim{d}, std::max<std::size_t>(budget + c.slack + 1, 40));
        prune_workspace ws, ws2;
        token_rows tok(H, d);
        std::vector<float> q(H * G * w * d);
        std::size_t rescores = 0, over = 0;
        // A 30-token prompt first (beyond the budget): pruned by the first step over the limit
        // or on the first re-scoring step.
        for (std::size_t t = 0; t < 30 + steps; ++t) {
          tok.make(pos_t(t));
          for (std::size_t l = 0; l < L; ++l) tok.append(cache, l, pos_t(t));
          if (t < 29) continue;
          for (std::size_t l = 0; l < L; ++l) {
            const std::uint64_t s = ev.steps(l) + 1;  // this step's number
            const decode_action expect = ev.due(cache, l, budget);
            const bool is_beta = s % c.beta == 0;
            if (is_beta && cache.max_length(l) > budget) REQUIRE(expect == decode_action::rescore);
            else if (cache.max_length(l) > budget + c.slack) REQUIRE(expect == decode_action::over_limit);
            else REQUIRE(expect == decode_action::none);
            // The engine builds queries only when the step will evict.
            layer_queries lq{};
            if (expect != decode_action::none) {
              for (auto& x : q) x = nd(rng());
              lq.queries = window_queries::dense(q.data(), kv_shape(heads{H * G}, tokens{w}, dim{d}));
            }
            kv_cache<float> before = cache;
            const decode_action a = ev.step(cache, l, budget, ws, lq);
            REQUIRE(a == expect);
            REQUIRE(ev.steps(l) == s);
            if (a == decode_action::none) {
              REQUIRE(dump_rows(cache) == dump_rows(before));
            } else {
              prune_layer(before, l, budget, policy, ws2, lq);  // a fresh prune at this step
              REQUIRE(dump_rows(cache) == dump_rows(before));
              REQUIRE(cache.max_length(l) == budget);
              (a == decode_action::rescore ? rescores : over)++;
            }
            REQUIRE(cache.max_length(l) <= budget + c.slack);
          }
        }
        CHECK(rescores > 0);
        if (c.slack >= c.beta) CHECK(over == 0);  // only re-scoring steps evict
      };
      if (kind == 0) {
        snapkv p;
        p.n_sink = 2;
        p.n_recent = w;  // the window's keys are the last w rows
        go(p);
      } else {
        go(tova{1, 1});
      }
    }
  }
}

TEST_CASE("budgets hold at every step: changing budgets, every granularity", "[decode]") {
  const std::size_t L = 3, H = 3, d = 4, sink = 2, recent = 2, steps = 260;
  for (granularity g : {granularity::per_head, granularity::shared, granularity::adaptive}) {
    for (int which = 0; which < 2; ++which) {
      INFO("granularity " << int(g) << (which == 0 ? " ratio budget" : " token budget, then a drop"));
      decode_options opt;
      opt.prune.mode = g;
      decode_evictor<knorm> ev(layers{L}, knorm{sink, recent}, opt);
      kv_cache<float> cache(layers{L}, heads{H}, dim{d}, 400);
      prune_workspace ws;
      token_rows tok(H, d);
      const std::vector<std::size_t> minimums = {sink + recent};
      std::size_t evictions = 0;
      std::vector<std::size_t> seen(L, 0);
      for (std::size_t t = 0; t < steps; ++t) {
        tok.make(pos_t(t));
        for (std::size_t l = 0; l < L; ++l) tok.append(cache, l, pos_t(t)), ++seen[l];
        // Ratio 0.3 of the sequence so far (pyramid: layers differ, budgets grow), or 90 tokens
        // in all that drop to 30 at step 150 (budgets fall below what the layers hold).
        const auto budgets = which == 0 ? decode_budget::ratio(0.3).split(pyramid_allocator{}, seen, {}, minimums)
                                        : decode_budget::tokens(t < 150 ? 90 : 30).split(uniform_allocator{}, seen, {}, minimums);
        for (std::size_t l = 0; l < L; ++l) {
          const std::size_t B = budgets[l], lim = ev.limit(B);
          const bool evicted = ev.step(cache, l, B, ws) != decode_action::none;
          evictions += evicted;
          std::size_t total = 0, longest = 0;
          for (std::size_t h = 0; h < H; ++h) total += cache.length(l, h), longest = std::max(longest, cache.length(l, h));
          if (g == granularity::adaptive) {
            REQUIRE(total <= lim * H);
            if (evicted) REQUIRE(total == B * H);
          } else {
            REQUIRE(longest <= lim);
            if (evicted)
              for (std::size_t h = 0; h < H; ++h) REQUIRE(cache.length(l, h) == B);  // heads were equal
          }
        }
      }
      CHECK(evictions > 20);
    }
  }
}

TEST_CASE("one eviction per slack + 1 tokens with a constant budget", "[decode]") {
  const std::size_t H = 2, d = 4, B = 64;
  for (const decode_slack s : {decode_slack::fraction(decode_slack::default_fraction), decode_slack::tokens(0),
                               decode_slack::tokens(9)}) {
    decode_options opt;
    opt.slack = s;
    decode_evictor<knorm> ev(layers{1}, knorm{4, 4}, opt);
    const std::size_t S = ev.slack(B), n = 10 * (S + 1);
    kv_cache<float> cache(layers{1}, heads{H}, dim{d}, B + S + 1);
    prune_workspace ws;
    token_rows tok(H, d);
    for (std::size_t t = 0; t < B; ++t) tok.make(pos_t(t)), tok.append(cache, 0, pos_t(t));
    std::vector<std::size_t> at;
    for (std::size_t i = 1; i <= n; ++i) {
      tok.make(pos_t(B + i));
      tok.append(cache, 0, pos_t(B + i));
      if (ev.step(cache, 0, B, ws) != decode_action::none) at.push_back(i);
    }
    INFO("slack " << S);
    REQUIRE(at.size() == 10);
    for (std::size_t e = 0; e < at.size(); ++e) CHECK(at[e] == (e + 1) * (S + 1));
  }
}

TEST_CASE("no allocation per decode step in steady state", "[decode]") {
  const std::size_t L = 2, H = 2, G = 2, d = 16, w = 4, B = 48;
  std::normal_distribution<float> nd;
  for (int kind = 0; kind < 4; ++kind) {
    INFO("policy " << kind);
    h2o_state st(L, H);
    const auto go = [&](auto policy) {
      decode_options opt;
      opt.rescore_every = 5;  // re-scoring and over-limit steps both
      decode_evictor<decltype(policy)> ev(layers{L}, policy, opt);
      const std::size_t S = ev.slack(B);
      kv_cache<f16> cache(layers{L}, heads{H}, dim{d}, B + S + 1);
      prune_workspace ws;
      std::vector<f16> k(H * d), v(H * d);
      std::vector<float> q(H * G * w * d), row(B + S + 1);
      for (auto& x : q) x = nd(rng());
      const layer_queries lq{window_queries::dense(q.data(), kv_shape(heads{H * G}, tokens{w}, dim{d})), {}};
      std::size_t evictions = 0;
      pos_t pos = 0;
      const auto token = [&] {
        for (std::size_t i = 0; i < k.size(); ++i) k[i] = f16(float((pos * 7 + pos_t(i)) % 13) - 6.f);
        for (std::size_t l = 0; l < L; ++l) {
          cache.append_token(l, k.data(), v.data(), pos);
          for (std::size_t h = 0; h < H && kind == 0; ++h) {
            const std::size_t n = cache.length(l, h);
            for (std::size_t j = 0; j < n; ++j) row[j] = float((pos + pos_t(j)) % 5) / float(n);
            st.accumulate(l, h, span<const float>(row.data(), n));
          }
          evictions += ev.step(cache, l, B, ws, lq) != decode_action::none;
        }
        ++pos;
      };
      for (std::size_t i = 0; i < 4 * (B + S + 1); ++i) token();  // warm up: the workspace grows
      const std::size_t before = evictions;
      const long news = g_news.load();
      for (std::size_t i = 0; i < 3 * (B + S + 1); ++i) token();
      const long after = g_news.load();
      CHECK(after == news);
      CHECK(evictions - before >= 3 * L);
    };
    if (kind == 0) go(h2o{2, 2, &st});
    if (kind == 1) {
      snapkv p;
      p.n_recent = w;
      go(p);
    }
    if (kind == 2) go(tova{});
    if (kind == 3) go(knorm{1, 1});
  }
}

TEST_CASE("decode_budget: tokens, bytes or a ratio of the current length, split by any allocator", "[decode]") {
  const std::vector<std::size_t> lengths = {100, 100, 100, 100, 100};
  // Tokens: min(n, sum); uniform over equal lengths: n / L each, the remainder to the lower layers.
  for (std::size_t n : {std::size_t{0}, std::size_t{7}, std::size_t{123}, std::size_t{499}, std::size_t{500}, std::size_t{10000}}) {
    const auto b = decode_budget::tokens(n);
    const std::size_t tot = std::min<std::size_t>(n, 500);
    CHECK(b.total(lengths) == tot);
    const auto s = b.split(uniform_allocator{}, lengths);
    std::vector<std::size_t> expect(5, tot / 5);
    for (std::size_t l = 0; l < tot % 5; ++l) ++expect[l];
    CHECK(s == expect);
    CHECK(b.split("uniform", lengths) == s);
  }
  // Bytes: floor(n / bytes_per_token) tokens; bytes per token of a cache.
  kv_cache<f16> c(layers{5}, heads{8}, dim{128}, 1);
  const std::size_t bpt = decode_budget::token_bytes(c);
  CHECK(bpt == 8 * (2 * 128 * 2 + 4));
  CHECK(decode_budget::bytes(200 * bpt + bpt - 1, bpt).total(lengths) == 200);
  CHECK(decode_budget::bytes(1000 * bpt, bpt).total(lengths) == 500);
  CHECK(decode_budget::bytes(5, bpt).which() == decode_budget::kind::bytes);
  // Ratio: floor(r * sum + 0.5), raised to the floors.
  CHECK(decode_budget::ratio(0.2).total(lengths) == 100);
  CHECK(decode_budget::ratio(0.001).total(lengths) == 1);  // 0.5 rounds up
  CHECK(decode_budget::ratio(0.0009).total(lengths) == 0);
  const std::vector<std::size_t> shortl = {3, 3, 3}, eight = {8};
  CHECK(decode_budget::ratio(0.1).total(shortl, eight) == 9);             // every layer keeps all
  CHECK(decode_budget::ratio(0.1).total(lengths, eight) == 50);           // 0.1 * 500 above the floors
  CHECK(decode_budget::ratio(0.01).total(lengths, eight) == 40);          // raised to 5 * 8
  CHECK(decode_budget::ratio(0.01).split(uniform_allocator{}, lengths, {}, eight) == std::vector<std::size_t>(5, 8));
  // A layer that has seen more gets more (uniform keeps one ratio), and any allocator by name.
  const std::vector<std::size_t> grown = {400, 100, 100, 100, 100};
  CHECK(decode_budget::ratio(0.25).split(uniform_allocator{}, grown) == std::vector<std::size_t>{100, 25, 25, 25, 25});
  CHECK(decode_budget::ratio(0.25).split("pyramid", grown) == decode_budget::ratio(0.25).split(pyramid_allocator{}, grown));
  sensitivity_profile p(5);
  for (std::size_t l = 0; l < 5; ++l) p.add_point(l, 0.2, 0.01 * double(l + 1)), p.add_point(l, 0.5, 0.002 * double(l + 1));
  for (const char* a : {"proportional", "curve"}) {
    const auto s = decode_budget::ratio(0.3).split(a, grown, p, eight);
    CHECK(std::accumulate(s.begin(), s.end(), std::size_t{0}) == 240);
    for (std::size_t l = 0; l < 5; ++l) CHECK((s[l] >= 8 && s[l] <= grown[l]));
  }
  // Errors name the argument.
  require_error([] { decode_budget::ratio(-0.1); }, {"keep ratio -0.1", "[0, 1]"});
  require_error([] { decode_budget::ratio(1.5); }, {"keep ratio 1.5"});
  require_error([] { decode_budget::ratio(std::nan("")); }, {"keep ratio"});
  require_error([] { decode_budget::bytes(10, 0); }, {"bytes_per_token must be > 0"});
  require_error([] { decode_budget::tokens(5).total({}); }, {"lengths is empty"});
  const std::vector<std::size_t> two = {1, 2};
  require_error([&] { decode_budget::tokens(5).total(lengths, two); }, {"minimums has 2 entries", "n_layers = 5"});
  require_error([&] { decode_budget::tokens(30).split(uniform_allocator{}, lengths, {}, eight); },
                {"budget of 30 tokens", "must keep (40 tokens) by 10"});
  require_error([&] { decode_budget::tokens(5).split("nope", lengths); }, {"unknown allocator 'nope'"});
  const std::vector<std::size_t> huge = {std::size_t{1} << 53, 1};
  require_error([&] { decode_budget::tokens(5).total(huge); }, {"lengths[1] = 1", "2^53"});
}

TEST_CASE("decode errors leave the cache, the h2o state and the step counts unchanged", "[decode]") {
  require_error([] { decode_evictor<knorm>(layers{0}, knorm{}); }, {"n_layers must be > 0"});
  decode_options zero;
  zero.rescore_every = 0;
  require_error([&] { decode_evictor<knorm>(layers{1}, knorm{}, zero); }, {"rescore_every must be >= 1, got 0"});
  decode_options bad_alpha;
  bad_alpha.prune.alpha = 2.f;
  require_error([&] { decode_evictor<knorm>(layers{1}, knorm{}, bad_alpha); }, {"alpha", "2"});

  const std::size_t H = 2, d = 4;
  kv_cache<float> cache(layers{2}, heads{H}, dim{d}, 32);
  token_rows tok(H, d);
  for (std::size_t t = 0; t < 10; ++t) {
    tok.make(pos_t(t));
    tok.append(cache, 0, pos_t(t));
    tok.append(cache, 1, pos_t(t));
  }
  prune_workspace ws;
  decode_options opt;
  opt.slack = decode_slack::tokens(1);
  const auto snap = dump_rows(cache);
  {
    decode_evictor<knorm> ev(layers{2}, knorm{2, 3}, opt);
    require_error([&] { ev.step(cache, 2, 8, ws); }, {"layer 2 out of range (n_layers 2)"});
    require_error([&] { ev.steps(5); }, {"layer 5 out of range"});
    require_error([&] { ev.reset(5); }, {"layer 5 out of range"});
    kv_cache<float> three(layers{3}, heads{H}, dim{d}, 4);
    require_error([&] { ev.step(three, 0, 8, ws); }, {"cache has 3 layers", "n_layers = 2"});
    // Budget 4 below the 5 protected rows of a head of 10: throws every step, not only when evicting.
    require_error([&] { ev.step(cache, 0, 4, ws); }, {"budget 4 for layer 0", "n_sink 2 + n_recent 3", "head 0 (10 rows)"});
    require_error([&] { ev.due(cache, 0, 4); }, {"budget 4"});
    CHECK(ev.step(cache, 0, 9, ws) == decode_action::none);  // 10 rows <= 9 + 1: within the slack
    CHECK(ev.steps(0) == 1);
    CHECK(ev.steps(1) == 0);
    CHECK(dump_rows(cache) == snap);
    ev.reset();
    CHECK(ev.steps(0) == 0);
    // A small head may keep fewer rows than the protected ones: nothing to evict.
    kv_cache<float> small(layers{2}, heads{H}, dim{d}, 8);
    for (std::size_t t = 0; t < 3; ++t) tok.make(pos_t(t)), tok.append(small, 0, pos_t(t));
    CHECK(ev.step(small, 0, 3, ws) == decode_action::none);
  }
  {
    // h2o whose state was not fed: throws at the evicting step, changing nothing.
    h2o_state st(2, H);
    decode_evictor<h2o> ev(layers{2}, h2o{0, 0, &st}, opt);
    require_error([&] { ev.step(cache, 0, 5, ws); }, {"state tracks 0 tokens"});
    CHECK(ev.steps(0) == 0);
    CHECK(dump_rows(cache) == snap);
    CHECK(ev.step(cache, 0, 9, ws) == decode_action::none);  // not evicting: the state is not read
    for (std::size_t h = 0; h < H; ++h) st.extend(0, h, 10);
    CHECK(ev.step(cache, 0, 5, ws) == decode_action::over_limit);
    CHECK(ev.steps(0) == 2);
    CHECK(cache.max_length(0) == 5);
    CHECK(st.length(0, 0) == 5);
  }
  {
    // snapkv without queries on an evicting step.
    decode_evictor<snapkv> ev(layers{2}, snapkv{}, opt);
    const auto s1 = dump_rows(cache);
    require_error([&] { ev.step(cache, 1, 5, ws); }, {"needs the layer's window queries (layer 1)"});
    CHECK(ev.steps(1) == 0);
    CHECK(dump_rows(cache) == s1);
  }
}

TEST_CASE("over_budget: the longest head, or the layer's total in adaptive mode", "[decode]") {
  kv_cache<float> c(layers{1}, heads{2}, dim{2}, 16);
  const float k[4] = {1, 2, 3, 4}, v[4] = {0, 0, 0, 0};
  for (pos_t p = 0; p < 6; ++p) c.append_token(0, k, v, p);
  const index_t keep[2] = {0, 1};
  c.retain(0, 1, span<const index_t>(keep, 2));  // heads of 6 and 2 rows
  CHECK(over_budget(c, 0, 5));
  CHECK_FALSE(over_budget(c, 0, 6));
  CHECK(over_budget(c, 0, 3, granularity::adaptive));        // 8 > 6
  CHECK_FALSE(over_budget(c, 0, 4, granularity::adaptive));  // 8 <= 8
  CHECK_FALSE(over_budget(c, 0, std::numeric_limits<std::size_t>::max(), granularity::adaptive));
  require_error([&] { over_budget(c, 1, 4); }, {"layer 1 out of range"});
}

TEST_CASE("decode_budget: sliding-window layers keep min(seen, W), the scope says what the budget covers",
          "[decode][hybrid]") {
  // Layers 0 and 2 slide over 10 tokens, 1 and 3 are global; every layer has seen 100 tokens.
  const std::vector<layer_attention> att = {layer_attention::sliding(window_tokens{10}), layer_attention::global(),
                                            layer_attention::sliding(window_tokens{10}), layer_attention::global()};
  const std::vector<std::size_t> seen(4, 100), eight = {8};
  decode_layers d;
  d.lengths = span<const std::size_t>(seen);
  d.minimums = span<const std::size_t>(eight);
  d.attention = span<const layer_attention>(att);
  // all_layers: a ratio of 10 + 100 + 10 + 100 = 220 tokens, the windows charged first.
  CHECK(decode_budget::ratio(0.25).request(d).budget.n_tokens == 55);  // floor(55.0 + 0.5)
  CHECK(decode_budget::ratio(0.25).split(uniform_allocator{}, d) == std::vector<std::size_t>{10, 18, 10, 17});
  CHECK(decode_budget::tokens(60).split("uniform", d) == std::vector<std::size_t>{10, 20, 10, 20});
  CHECK(decode_budget::tokens(1000).split(uniform_allocator{}, d) == std::vector<std::size_t>{10, 100, 10, 100});
  // global_layers: a ratio of the global layers' 200 tokens, the windows on top.
  d.scope = budget_scope::global_layers;
  CHECK(decode_budget::ratio(0.25).request(d).budget.n_tokens == 50);
  CHECK(decode_budget::ratio(0.25).split(uniform_allocator{}, d) == std::vector<std::size_t>{10, 25, 10, 25});
  CHECK(decode_budget::tokens(30).split(uniform_allocator{}, d) == std::vector<std::size_t>{10, 15, 10, 15});
  // Early in a generation a ratio is raised to the floors: here every layer keeps what it has seen.
  const std::vector<std::size_t> five(4, 5);
  d.lengths = span<const std::size_t>(five);
  for (budget_scope sc : {budget_scope::all_layers, budget_scope::global_layers}) {
    d.scope = sc;
    CHECK(decode_budget::ratio(0.25).split(uniform_allocator{}, d) == five);
  }
  // A fixed budget below what the layers must keep names the shortfall.
  d.lengths = span<const std::size_t>(seen);
  d.scope = budget_scope::all_layers;
  require_error([&] { decode_budget::tokens(30).split(uniform_allocator{}, d); },
                {"budget of 30 tokens", "must keep (36 tokens", "sliding-window layers' included", "by 6 tokens"});
  d.scope = budget_scope::global_layers;
  require_error([&] { decode_budget::tokens(15).split(uniform_allocator{}, d); }, {"must keep (16 tokens) by 1"});
  // Shapes are checked as allocate() checks them.
  const std::vector<layer_attention> three(3, layer_attention::global());
  d.attention = span<const layer_attention>(three);
  require_error([&] { decode_budget::ratio(0.5).request(d); }, {"attention has 3 entries", "n_layers = 4"});
}

TEST_CASE("decode_budget on hybrid layers equals allocate() with the same ratio wherever that is feasible",
          "[decode][hybrid]") {
  // Independent reference: allocate() resolves a ratio budget itself (rounding half up of what
  // the scope covers); decode_budget must give the same counts, and exactly the floors where
  // allocate() finds the ratio below them.
  auto& g = rng();
  sensitivity_profile p;
  for (int trial = 0; trial < 300; ++trial) {
    const std::size_t L = 1 + g() % 6;
    std::vector<layer_attention> att(L, layer_attention::global());
    std::vector<std::size_t> seen(L), mins(1, g() % 12);
    for (std::size_t l = 0; l < L; ++l) {
      if (g() % 3 == 0) att[l] = layer_attention::sliding(window_tokens{1 + g() % 40});
      seen[l] = g() % 200;
    }
    p = sensitivity_profile(L);
    for (std::size_t l = 0; l < L; ++l)
      for (double r : {0.1, 0.3, 0.6}) p.add_point(l, r, (1.0 - r) * double(1 + g() % 9));
    const double ratio = double(g() % 1001) / 1000.0;
    const budget_scope sc = g() % 2 ? budget_scope::all_layers : budget_scope::global_layers;
    decode_layers d;
    d.lengths = span<const std::size_t>(seen);
    d.minimums = span<const std::size_t>(mins);
    d.attention = span<const layer_attention>(att);
    d.scope = sc;
    allocation_request req;
    req.lengths = seen;
    req.minimums = mins;
    req.attention = att;
    req.scope = sc;
    req.budget = global_budget::ratio(ratio);
    for (const char* a : {"uniform", "pyramid", "proportional", "curve"}) {
      INFO("trial " << trial << " allocator " << a << " ratio " << ratio);
      const std::vector<std::size_t> got = decode_budget::ratio(ratio).split(a, d, p);
      std::vector<std::size_t> want;
      bool feasible = true;
      try {
        want = allocate(a, req, p);
      } catch (const error&) {
        feasible = false;
      }
      if (feasible) {
        CHECK(got == want);
      } else {  // below the floors: every layer at its floor
        for (std::size_t l = 0; l < L; ++l) {
          const std::size_t floor = att[l].is_sliding() ? std::min(seen[l], att[l].window->value)
                                                        : std::min(mins[0], seen[l]);
          CHECK(got[l] == floor);
        }
      }
    }
  }
}
