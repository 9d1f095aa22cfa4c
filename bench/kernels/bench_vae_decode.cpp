// bench_vae_decode: wall time of one AutoencoderKL decode on the CPU, for whole-model
// before/after figures of a conv path (docs/kernels.md). Run it once as is and once with
// STAGECRAFT_WINOGRAD=0 (the im2col / direct paths only), alternating, on the same model:
//   python3 tools/reference.py random-model --preset real-vae --seed 5 --out /tmp/realvae
//   bench_vae_decode --model /tmp/realvae/vae --latent 32 --runs 3      # a 256x256 image
// Prints each run and the median; the first (untimed) decode fills the Winograd weight cache
// as a model's first request would.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "stages/vae/vae_decoder.hpp"

using namespace stagecraft;

int main(int argc, char** argv) {
  std::string model;
  int latent = 32, runs = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--model") == 0) model = argv[i + 1];
    else if (std::strcmp(argv[i], "--latent") == 0) latent = std::atoi(argv[i + 1]);
    else if (std::strcmp(argv[i], "--runs") == 0) runs = std::atoi(argv[i + 1]);
  }
  if (model.empty() || latent < 1 || runs < 1) {
    std::fprintf(stderr, "usage: bench_vae_decode --model DIR/vae [--latent 32] [--runs 3]\n");
    return 2;
  }
  const auto vae = VaeDecoder::load(model, DType::f32, Device::cpu());
  std::mt19937 g(7);
  std::normal_distribution<float> nd;
  std::vector<float> v(static_cast<size_t>(vae.latent_channels()) * latent * latent);
  for (float& e : v) e = nd(g);
  const Tensor z = Tensor::from_vector(v, {1, vae.latent_channels(), latent, latent});
  const char* wino = std::getenv("STAGECRAFT_WINOGRAD");
  std::printf("VAE decode %dx%d latent -> %dx%d image, Winograd %s\n", latent, latent, latent * vae.scale_factor(),
              latent * vae.scale_factor(), (wino && std::string(wino) == "0") ? "off" : "on");
  {
    const auto t0 = std::chrono::steady_clock::now();
    vae.decode(z);  // warm-up: fills the weight cache, scratch, OpenBLAS threads
    std::printf("  first decode (untimed in the median): %.3f s\n",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::vector<double> t;
  for (int r = 0; r < runs; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    vae.decode(z);
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    std::printf("  run %d: %.3f s\n", r, t.back());
    std::fflush(stdout);
  }
  std::sort(t.begin(), t.end());
  std::printf("median %.3f s\n", t[t.size() / 2]);
  return 0;
}
