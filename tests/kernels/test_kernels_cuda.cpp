// The CPU test cases on the CUDA backend, compared with the CPU backend's results.
// Every case skips with the reason when no CUDA device is usable.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "tests/kernels/kernel_cases.hpp"

using namespace stagecraft;

#define REQUIRE_CUDA_OR_SKIP()                                                   \
  if (!stagecraft::cuda_available()) {                                           \
    MESSAGE("skipped: " << stagecraft::cuda_unavailable_reason());               \
    return;                                                                      \
  }

static const Device gpu = Device::cuda(0);

TEST_CASE("linear on CUDA matches the CPU backend") { REQUIRE_CUDA_OR_SKIP(); kcases::linear(gpu); }
TEST_CASE("linear_per_item on CUDA matches the CPU backend and is batch invariant") {
  REQUIRE_CUDA_OR_SKIP();
  kcases::linear_per_item(gpu);
}
TEST_CASE("the fused linear ops on CUDA match the CPU backend and are batch invariant") {
  REQUIRE_CUDA_OR_SKIP();
  kcases::fused_linear(gpu);
}
TEST_CASE("layer_norm_modulate on CUDA matches the CPU backend") {
  REQUIRE_CUDA_OR_SKIP();
  kcases::layer_norm_modulate(gpu);
}
TEST_CASE("matmul on CUDA matches the CPU backend") { REQUIRE_CUDA_OR_SKIP(); kcases::matmul(gpu); }
TEST_CASE("attention on CUDA matches the CPU backend with causal and padding masks") {
  REQUIRE_CUDA_OR_SKIP();
  kcases::attention(gpu);
}
TEST_CASE("softmax and the norms on CUDA match the CPU backend") { REQUIRE_CUDA_OR_SKIP(); kcases::norms(gpu); }
TEST_CASE("activations on CUDA match the CPU backend") { REQUIRE_CUDA_OR_SKIP(); kcases::activations(gpu); }
TEST_CASE("element-wise ops on CUDA match the CPU backend") { REQUIRE_CUDA_OR_SKIP(); kcases::elementwise(gpu); }
TEST_CASE("conv2d and upsampling on CUDA match the CPU backend") { REQUIRE_CUDA_OR_SKIP(); kcases::conv(gpu); }
TEST_CASE("conv2d_upsample2x on CUDA matches the CPU backend") {
  REQUIRE_CUDA_OR_SKIP();
  kcases::conv_upsample2x(gpu);
}
TEST_CASE("timestep_embedding, patchify and unpatchify on CUDA match the CPU backend") {
  REQUIRE_CUDA_OR_SKIP();
  kcases::diffusion_helpers(gpu);
}
TEST_CASE("cast, contiguous and cat on CUDA match the CPU backend") { REQUIRE_CUDA_OR_SKIP(); kcases::data_movement(gpu); }

TEST_CASE("a round trip through the GPU returns the same bytes") {
  REQUIRE_CUDA_OR_SKIP();
  Tensor x = kcases::rand_tensor({3, 17}, DType::bf16);
  Tensor back = ops::to_device(ops::to_device(x, gpu), Device::cpu());
  kcases::sync(gpu);
  CHECK(kernels::reference::max_abs_diff(x, back) == 0.0);
}
