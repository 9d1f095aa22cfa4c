// Every op of kernels/ops.hpp on the CPU backend against its naive reference, over odd
// sizes, f32/f16/bf16, masks and strided views; plus the dispatch point's checks.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "tests/kernels/kernel_cases.hpp"

using namespace stagecraft;
const Device cpu = Device::cpu();

TEST_CASE("linear matches the naive reference for odd sizes, every dtype and a transposed input") {
  kcases::linear(cpu);
}
TEST_CASE("linear_per_item matches the reference and gives an item the same bits alone or in any batch") {
  kcases::linear_per_item(cpu);
}
TEST_CASE("matmul matches the naive reference with and without trans_b and a broadcast batch") {
  kcases::matmul(cpu);
}
TEST_CASE("attention matches the naive reference with causal and padding masks across query blocks") {
  kcases::attention(cpu);
}
TEST_CASE("softmax and the norms match the naive reference, group_norm with and without fused SiLU") {
  kcases::norms(cpu);
}
TEST_CASE("gelu, quick_gelu and silu match the naive reference including large magnitudes") {
  kcases::activations(cpu);
}
TEST_CASE("element-wise ops broadcast like numpy and modulate takes every documented shift shape") {
  kcases::elementwise(cpu);
}
TEST_CASE("conv2d matches the naive reference for 1x1, 3x3 and 5x5 kernels, stride 1 and 2, with padding") {
  kcases::conv(cpu);
}
TEST_CASE("timestep_embedding, patchify and unpatchify match their diffusers-layout references") {
  kcases::diffusion_helpers(cpu);
}
TEST_CASE("cast, contiguous and cat copy exactly") { kcases::data_movement(cpu); }

TEST_CASE("a fully masked attention row gives zeros, not NaN") {
  Tensor q = kcases::rand_tensor({1, 1, 2, 4}), k = kcases::rand_tensor({1, 1, 3, 4}), v = kcases::rand_tensor({1, 1, 3, 4});
  Tensor mask = Tensor::zeros({1, 3}, DType::u8);
  ops::AttentionOptions o;
  o.key_padding_mask = &mask;
  for (float e : ops::attention(q, k, v, o).to_vector()) CHECK(e == 0.0f);
  // Causal with more queries than keys: the first query sees no key.
  o.key_padding_mask = nullptr;
  o.causal = true;
  Tensor q3 = kcases::rand_tensor({1, 1, 5, 4});
  const auto y = ops::attention(q3, k, v, o).to_vector();
  for (int d = 0; d < 4; ++d) CHECK(y[d] == 0.0f);
}

TEST_CASE("patchify followed by unpatchify in matching order restores the image") {
  Tensor x = kcases::rand_tensor({2, 4, 8, 6});
  // patchify gives (c, py, px); reorder to (py, px, c) as PixArt's final layer emits.
  Tensor tokens = ops::patchify(x, 2).reshape({2, 12, 4, 2, 2}).permute({0, 1, 3, 4, 2}).contiguous().reshape({2, 12, 16});
  CHECK(kernels::reference::max_abs_diff(ops::unpatchify(tokens, 2, 4, 8, 6), x) == 0.0);
}

TEST_CASE("the dispatch point rejects bad shapes, dtypes and devices with the op name in the message") {
  auto message_of = [](auto&& fn) {
    try {
      fn();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  Tensor x = kcases::rand_tensor({3, 5}), w = kcases::rand_tensor({4, 6});
  std::string m = message_of([&] { ops::linear(x, w); });
  CHECK(m.find("linear") != std::string::npos);
  CHECK(m.find("[4, 6]") != std::string::npos);
  m = message_of([&] { ops::add(x, kcases::rand_tensor({3, 5}, DType::f16)); });
  CHECK(m.find("different dtypes") != std::string::npos);
  m = message_of([&] { ops::add(x, kcases::rand_tensor({2, 5})); });
  CHECK(m.find("do not broadcast") != std::string::npos);
  m = message_of([&] { ops::group_norm(kcases::rand_tensor({1, 6, 2, 2}), 4, nullptr, nullptr, 1e-5f); });
  CHECK(m.find("groups") != std::string::npos);
  Tensor q = kcases::rand_tensor({1, 2, 3, 8}), kk = kcases::rand_tensor({1, 2, 4, 8});
  Tensor bad_mask = Tensor::zeros({1, 3}, DType::u8);
  ops::AttentionOptions o;
  o.key_padding_mask = &bad_mask;
  m = message_of([&] { ops::attention(q, kk, kk, o); });
  CHECK(m.find("key_padding_mask must be [1, 4]") != std::string::npos);
  m = message_of([&] { ops::linear(Tensor::zeros({2, 3}, DType::i32), Tensor::zeros({2, 3}, DType::i32)); });
  CHECK(m.find("f32, f16 or bf16") != std::string::npos);
  m = message_of([&] { ops::unpatchify(kcases::rand_tensor({1, 5, 16}), 2, 4, 8, 6); });
  CHECK(m.find("unpatchify") != std::string::npos);
#if !STAGECRAFT_HAVE_CUDA
  m = message_of([&] { ops::to_device(x, Device::cuda(0)); });
  CHECK(m.find("built without CUDA") != std::string::npos);
#endif
}

TEST_CASE("ops return their input unchanged when there is nothing to do") {
  Tensor x = kcases::rand_tensor({2, 3});
  CHECK(ops::contiguous(x).data() == x.data());
  CHECK(ops::cast(x, DType::f32).data() == x.data());
  CHECK(ops::to_device(x, Device::cpu()).data() == x.data());
}
