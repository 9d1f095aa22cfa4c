// An example stage plugin: `affine` computes y = scale * x + shift on one f32
// tensor of each packet. Build it with the project (it is target
// stagecraft_custom_stage) and name it in a pipeline:
//
//   stages:
//     - {name: denoise, type: synthetic_denoiser, cost: {per_batch_ms: 1}}
//     - {name: brighten, type: affine, plugin: PATH/libstagecraft_custom_stage.so,
//        input: latents, output: latents, scale: 0.5, shift: 1}
//
// The one thing a plugin must have is the extern "C" registration function below.
#include <stdexcept>

#include "core/error.hpp"
#include "stages/stage.hpp"

namespace {

class AffineStage : public stagecraft::Stage {
 public:
  void load(const stagecraft::StageContext& ctx) override {
    name_ = ctx.name;
    SC_CHECK(ctx.device.is_cpu(), Errc::unsupported,
             "stage '" << name_ << "' (affine, from the example plugin) runs on the CPU only; set device: cpu");
    const auto& p = ctx.params;
    input_ = p.value("input", std::string("latents"));
    output_ = p.value("output", input_);
    scale_ = p.value("scale", 1.0f);
    shift_ = p.value("shift", 0.0f);
  }

  // Element-wise work on independent packets: any batch size is fine.
  stagecraft::StageTraits traits() const override { return {1 << 16, false}; }

  void run(std::vector<stagecraft::PacketPtr>& batch, stagecraft::Lane&) override {
    for (auto& p : batch) {
      const stagecraft::Tensor& x = p->tensor(input_);
      SC_CHECK(x.dtype() == stagecraft::DType::f32 && x.device().is_cpu(), Errc::unsupported,
               "stage '" << name_ << "' wants a CPU f32 '" << input_ << "', got " << x.describe());
      stagecraft::Tensor y = x.clone();  // contiguous, never aliasing the input another stage may hold
      float* d = y.data_as<float>();
      for (int64_t i = 0; i < y.numel(); ++i) d[i] = scale_ * d[i] + shift_;
      p->tensors[output_] = std::move(y);
    }
  }

 private:
  std::string name_, input_, output_;
  float scale_ = 1.0f, shift_ = 0.0f;
};

}  // namespace

extern "C" void stagecraft_register_stages() {
  stagecraft::register_stage_type("affine", [] { return std::make_unique<AffineStage>(); });
}
