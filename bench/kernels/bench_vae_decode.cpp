// bench_vae_decode: wall time of one AutoencoderKL decode on the CPU, for whole-model
// before/after figures of a conv path (docs/kernels.md). Run it once as is and once with
// STAGECRAFT_WINOGRAD=0 (the im2col / direct paths only), alternating, on the same model:
//   python3 tools/reference.py random-model --preset real-vae --seed 5 --out /tmp/realvae
//   bench_vae_decode --model /tmp/realvae/vae --latent 32 --runs 3      # a 256x256 image
// Prints each run and the median; the first (untimed) decode fills the Winograd weight cache
// as a model's first request would. --tile PX [--overlap PX] decodes tile by tile (the
// stage's `tiling:`); the process's peak RSS (VmHWM) is printed last, so a tiled 1024x1024
// decode (--latent 128 --tile 512) can be held against a whole 512x512 one (--latent 64).
// The image's FNV-1a hash is printed too: two builds that claim the same bytes (e.g. the
// upsample folded into the following conv, or not) must print the same hash.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "stages/vae/vae_decoder.hpp"

using namespace stagecraft;

namespace {
/// The process's peak resident set (VmHWM of /proc/self/status) in MiB; -1 where unreadable.
double peak_rss_mib() {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return -1;
}

uint64_t fnv1a(const Tensor& t) {
  const Tensor c = t.contiguous();
  const auto* p = static_cast<const unsigned char*>(c.data());
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < c.nbytes(); ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}
}  // namespace

int main(int argc, char** argv) {
  std::string model;
  int latent = 32, runs = 3, tile = 0, overlap = 64;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--model") == 0) model = argv[i + 1];
    else if (std::strcmp(argv[i], "--latent") == 0) latent = std::atoi(argv[i + 1]);
    else if (std::strcmp(argv[i], "--runs") == 0) runs = std::atoi(argv[i + 1]);
    else if (std::strcmp(argv[i], "--tile") == 0) tile = std::atoi(argv[i + 1]);
    else if (std::strcmp(argv[i], "--overlap") == 0) overlap = std::atoi(argv[i + 1]);
  }
  if (model.empty() || latent < 1 || runs < 1 || tile < 0 || overlap < 0) {
    std::fprintf(stderr,
                 "usage: bench_vae_decode --model DIR/vae [--latent 32] [--runs 3] [--tile PX [--overlap 64]]\n");
    return 2;
  }
  TilingOptions tiling;
  tiling.tile = tile;
  tiling.overlap = overlap;
  const TilingOptions* tiled = tile > 0 ? &tiling : nullptr;
  const auto vae = VaeDecoder::load(model, DType::f32, Device::cpu());
  std::mt19937 g(7);
  std::normal_distribution<float> nd;
  std::vector<float> v(static_cast<size_t>(vae.latent_channels()) * latent * latent);
  for (float& e : v) e = nd(g);
  const Tensor z = Tensor::from_vector(v, {1, vae.latent_channels(), latent, latent});
  const char* wino = std::getenv("STAGECRAFT_WINOGRAD");
  std::printf("VAE decode %dx%d latent -> %dx%d image, Winograd %s, %s\n", latent, latent, latent * vae.scale_factor(),
              latent * vae.scale_factor(), (wino && std::string(wino) == "0") ? "off" : "on",
              tiled ? ("tiles of " + std::to_string(tile) + " px, overlap " + std::to_string(overlap)).c_str()
                    : "whole (no tiling)");
  {
    const auto t0 = std::chrono::steady_clock::now();
    vae.decode(z, tiled);  // warm-up: fills the weight cache, scratch, OpenBLAS threads
    std::printf("  first decode (untimed in the median): %.3f s\n",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::vector<double> t;
  Tensor image;
  for (int r = 0; r < runs; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    image = Tensor();  // the previous image's memory is not part of this run's peak
    image = vae.decode(z, tiled);
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    std::printf("  run %d: %.3f s\n", r, t.back());
    std::fflush(stdout);
  }
  std::sort(t.begin(), t.end());
  std::printf("median %.3f s\n", t[t.size() / 2]);
  std::printf("image FNV-1a: %016llx\n", static_cast<unsigned long long>(fnv1a(image)));
  std::printf("peak RSS of the process (VmHWM): %.0f MiB\n", peak_rss_mib());
  return 0;
}
