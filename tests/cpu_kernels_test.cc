// SiluMul and PagedDecodeAttention (engine/cpu_kernels.h), the latter against attention computed
// here in float64 from keys and values gathered one position at a time:
// scattered block tables, ragged lengths, sliding windows, GQA/MQA, head dims
// that take the AVX-512 path (64, 128) and the generic one (48), float32 and
// bfloat16 pools.
#include "engine/cpu_kernels.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace streamgen {
namespace {

struct Case {
  int64_t heads, kv_heads, head_dim;
  torch::ScalarType dtype;
  int64_t window;  // 0: none
};

std::string Name(const testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  return "H" + std::to_string(c.heads) + "_KV" + std::to_string(c.kv_heads) + "_D" +
         std::to_string(c.head_dim) + (c.dtype == torch::kBFloat16 ? "_bf16" : "_f32") +
         (c.window > 0 ? "_window" + std::to_string(c.window) : "");
}

class PagedDecodeAttentionTest : public testing::TestWithParam<Case> {};

TEST_P(PagedDecodeAttentionTest, MatchesGatheredReference) {
  const Case c = GetParam();
  torch::manual_seed(7);
  std::mt19937 rng(11);
  const int64_t block = 16, num_blocks = 64, batch = 5;
  const int64_t slots = block * num_blocks;
  torch::Tensor k_pool = torch::randn({slots, c.kv_heads, c.head_dim}).to(c.dtype);
  torch::Tensor v_pool = torch::randn({slots, c.kv_heads, c.head_dim}).to(c.dtype);
  torch::Tensor q = torch::randn({batch, c.heads, c.head_dim}).to(c.dtype);
  // Each sequence gets its own shuffled blocks; lengths cover 1 token, a
  // partial block, exact blocks and many blocks.
  std::vector<int> all(num_blocks);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  const int64_t positions[batch] = {0, 5, 15, 31, 200};  // the query's own position
  std::vector<std::vector<int>> tables(batch);
  std::vector<DecodeSeq> seqs;
  size_t next = 0;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i <= positions[b] / block; ++i) tables[b].push_back(all[next++]);
    const int64_t first = c.window > 0 ? std::max<int64_t>(0, positions[b] - c.window + 1) : 0;
    seqs.push_back({tables[b].data(), first, positions[b]});
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  torch::Tensor out = PagedDecodeAttention(q, k_pool, v_pool, seqs, block, scale);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{batch, c.heads * c.head_dim}));
  ASSERT_EQ(out.scalar_type(), c.dtype);

  // Alone (a batch of one, whose KV heads are split among threads) the
  // longest sequence gets bit-identical output: alone and batched must agree.
  torch::Tensor alone = PagedDecodeAttention(q.narrow(0, batch - 1, 1).contiguous(), k_pool,
                                             v_pool, {seqs[batch - 1]}, block, scale);
  EXPECT_TRUE(torch::equal(alone[0], out[batch - 1]));

  auto kd = k_pool.to(torch::kFloat64), vd = v_pool.to(torch::kFloat64);
  auto qd = q.to(torch::kFloat64);
  auto got = out.to(torch::kFloat64).view({batch, c.heads, c.head_dim});
  const int64_t g = c.heads / c.kv_heads;
  const double tol = c.dtype == torch::kBFloat16 ? 2e-2 : 2e-5;
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<int64_t> rows;
    for (int64_t p = seqs[b].first; p <= seqs[b].last; ++p) {
      rows.push_back(int64_t{tables[b][p / block]} * block + p % block);
    }
    auto idx = torch::tensor(rows);
    for (int64_t h = 0; h < c.heads; ++h) {
      auto keys = kd.select(1, h / g).index_select(0, idx);    // [L, D]
      auto values = vd.select(1, h / g).index_select(0, idx);  // [L, D]
      auto probs = torch::softmax(keys.matmul(qd[b][h]) * scale, 0);
      auto want = probs.matmul(values);
      const double err = (got[b][h] - want).abs().max().item<double>();
      EXPECT_LT(err, tol) << "sequence " << b << " head " << h;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PagedDecodeAttentionTest,
    testing::Values(Case{4, 4, 64, torch::kFloat32, 0}, Case{4, 4, 64, torch::kBFloat16, 0},
                    Case{8, 2, 64, torch::kFloat32, 0}, Case{8, 2, 128, torch::kBFloat16, 0},
                    Case{4, 1, 128, torch::kFloat32, 0}, Case{6, 3, 48, torch::kFloat32, 0},
                    Case{6, 3, 48, torch::kBFloat16, 0}, Case{8, 2, 64, torch::kFloat32, 20},
                    Case{4, 4, 48, torch::kFloat32, 7}, Case{12, 12, 64, torch::kBFloat16, 0},
                    Case{32, 8, 128, torch::kFloat32, 0}),
    Name);

TEST(PagedDecodeAttention, RejectsMismatchedShapes) {
  torch::Tensor pool = torch::zeros({32, 2, 64});  // [slots, KV, D]
  torch::Tensor q = torch::zeros({1, 4, 64});
  std::vector<int> table = {0};
  std::vector<DecodeSeq> seqs = {{table.data(), 0, 3}};
  EXPECT_NO_THROW(PagedDecodeAttention(q, pool, pool, seqs, 16, 0.125f));
  try {
    PagedDecodeAttention(torch::zeros({1, 3, 64}), pool, pool, seqs, 16, 0.125f);
    FAIL() << "3 heads over 2 KV heads accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("shapes do not match"), std::string::npos) << e.what();
  }
  try {
    PagedDecodeAttention(q, pool.to(torch::kBFloat16), pool.to(torch::kBFloat16), seqs, 16,
                         0.125f);
    FAIL() << "dtype mismatch accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("pools must be"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace streamgen

namespace streamgen {
namespace {

// SiluMul against libtorch's silu(gate) * up computed in float64, on rows
// whose length is not a multiple of 16 (the masked tail), over a wide range
// of inputs (exp's clamp included).
TEST(SiluMul, MatchesLibtorch) {
  torch::manual_seed(3);
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    for (int64_t inter : {16, 37, 2048}) {
      torch::Tensor gu = (torch::randn({5, 2 * inter}) * 8).to(dtype);
      gu[0][0] = 120.0f;   // exp(-120) underflows: silu = x
      gu[0][1] = -120.0f;  // silu = 0
      torch::Tensor got = SiluMul(gu);
      ASSERT_EQ(got.sizes(), (std::vector<int64_t>{5, inter}));
      ASSERT_EQ(got.scalar_type(), dtype);
      torch::Tensor g = gu.narrow(1, 0, inter).to(torch::kFloat64);
      torch::Tensor u = gu.narrow(1, inter, inter).to(torch::kFloat64);
      torch::Tensor want = torch::silu(g) * u;
      torch::Tensor err = (got.to(torch::kFloat64) - want).abs() / (want.abs() + 1e-3);
      const double tol = dtype == torch::kBFloat16 ? 1e-2 : 1e-5;
      EXPECT_LT(err.max().item<double>(), tol) << c10::toString(dtype) << " inter " << inter;
    }
  }
}

}  // namespace
}  // namespace streamgen

namespace streamgen {
namespace {

// RmsNorm against Hugging Face's LlamaRMSNorm written in libtorch ops: float32
// statistics, the normalised value cast to the input dtype, then the weight.
// The fused kernel sums squares in another order, so a bfloat16 result may
// round one unit differently; float32 agrees to ~1e-6.
TEST(RmsNorm, MatchesHuggingFaceFormula) {
  torch::manual_seed(5);
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    for (int64_t n : {16, 40, 768}) {
      torch::Tensor x = (torch::randn({7, n}) * 3).to(dtype);
      torch::Tensor w = (torch::rand({n}) + 0.5).to(dtype);
      torch::Tensor got = RmsNorm(x, w, 1e-6);
      ASSERT_EQ(got.sizes(), x.sizes());
      ASSERT_EQ(got.scalar_type(), dtype);
      torch::Tensor xf = x.to(torch::kFloat32);
      torch::Tensor want = w * (xf * torch::rsqrt(xf.pow(2).mean(-1, true) + 1e-6)).to(dtype);
      torch::Tensor err = (got.to(torch::kFloat32) - want.to(torch::kFloat32)).abs() /
                          (want.to(torch::kFloat32).abs() + 1e-3);
      const double tol = dtype == torch::kBFloat16 ? 8e-3 : 2e-6;
      EXPECT_LT(err.max().item<double>(), tol) << c10::toString(dtype) << " n " << n;
      if (dtype == torch::kBFloat16) {  // almost every element is bit-identical
        const double same = got.eq(want).to(torch::kFloat32).mean().item<double>();
        EXPECT_GT(same, 0.99) << "n " << n;
      }
    }
  }
}

TEST(RotaryInPlace, BitIdenticalToTheLibtorchOps) {
  torch::manual_seed(21);
  for (torch::ScalarType dt : {torch::kFloat32, torch::kBFloat16}) {
    for (int64_t d : {64, 128, 48}) {
      const int64_t heads = 5, extra = 3, t = 37, p = 300;
      torch::Tensor qkv = torch::randn({t, (heads + extra) * d}).to(dt);
      torch::Tensor angles = torch::rand({p, d}) * 6;
      torch::Tensor cos = angles.cos().to(dt), sin = angles.sin().to(dt);
      std::vector<int64_t> positions;
      for (int64_t i = 0; i < t; ++i) positions.push_back((i * 97) % p);
      // The op-by-op path (LlamaModel::ApplyRope).
      torch::Tensor pos = torch::tensor(positions);
      torch::Tensor c = cos.index_select(0, pos).unsqueeze(1), s = sin.index_select(0, pos).unsqueeze(1);
      torch::Tensor x = qkv.narrow(1, 0, heads * d).view({t, heads, d});
      const int64_t half = d / 2;
      torch::Tensor rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
      torch::Tensor want = x * c + rotated * s;
      torch::Tensor untouched = qkv.narrow(1, heads * d, extra * d).clone();
      RotaryInPlace(qkv, heads, d, cos, sin, positions);
      EXPECT_TRUE(torch::equal(qkv.narrow(1, 0, heads * d).view({t, heads, d}), want))
          << "dtype " << dt << " D " << d;
      EXPECT_TRUE(torch::equal(qkv.narrow(1, heads * d, extra * d), untouched));
    }
  }
  torch::Tensor qkv = torch::randn({2, 64});
  torch::Tensor table = torch::randn({4, 32});
  try {
    RotaryInPlace(qkv, 2, 32, table, table, {0, 4});
    ADD_FAILURE() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("RotaryInPlace: position 4"),
              std::string::npos);
  }
}

}  // namespace
}  // namespace streamgen
