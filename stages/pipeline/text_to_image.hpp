#pragma once
// The sequential text-to-image pipeline: tokenizer + CLIP text encoder, PixArt
// denoiser with classifier-free guidance and a scheduler, VAE decoder, uint8
// post-processing — run in order in one thread with no actors. It is the ground
// truth the actor engine must match byte for byte, so each stage is also a public
// function the engine's stages call (encode_prompt, prepare_latents, denoise_step,
// decode, to_image); generate() is nothing but those in sequence.
//
//   auto pipe = TextToImagePipeline::load("models/tiny-shapes", Device::cpu());
//   GenerateOptions o;
//   o.prompt = "a red circle in the center on a blue background";
//   o.seed = 7;
//   GenerateResult r = pipe.generate(o);     // r.image: u8 [1, H, W, 3] on the CPU
//   write_png("out.png", r.image.select(0, 0));
//
// Model defaults (steps, guidance, scheduler, width, height) come from the folder's
// stagecraft.json {"defaults": {...}} when present, else 20 steps, guidance 4.5, the
// scheduler config's own class and the transformer's sample_size × the VAE scale.
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/device.hpp"
#include "core/packet.hpp"
#include "core/tensor.hpp"
#include "stages/dit/pixart.hpp"
#include "stages/schedulers/scheduler.hpp"
#include "stages/text/clip_text_encoder.hpp"
#include "stages/text/clip_tokenizer.hpp"
#include "stages/vae/vae_decoder.hpp"

namespace stagecraft {

class DumpWriter;

struct GenerateOptions {
  std::string prompt;
  std::string negative_prompt;      ///< the unconditional prompt of guidance ("" as PixArt)
  uint64_t seed = 0;
  int steps = 0;                    ///< 0: model default (negative: refused)
  float guidance = -1.0f;           ///< < 0: model default; <= 1 disables classifier-free guidance
  int width = 0, height = 0;        ///< 0: model default; multiples of vae scale × patch size
  std::string scheduler;            ///< "flow_match_euler" | "ddim" | "dpm_2m"; "": model default
  Tensor initial_latents;           ///< optional [1, C, H/s, W/s] replacing the seeded noise
  std::optional<TilingOptions> tiling;  ///< tiled VAE decoding
  /// Optional: every stage writes its outputs here (names: stages/pipeline/stage_dump.hpp).
  std::shared_ptr<DumpWriter> dump;
};

/// A request's fields as generate() options (no tiling): how the engine's model stages and
/// `stagecraft generate` read the same request.
GenerateOptions options_of(const Request& r);

/// Milliseconds per stage of one generate() (device work included: CUDA stages are synchronised).
struct StageTimes {
  double encode_ms = 0, denoise_ms = 0, decode_ms = 0, post_ms = 0, total_ms = 0;
};

struct GenerateResult {
  Tensor image;    ///< u8 [1, H, W, 3], CPU
  Tensor latents;  ///< final latents [1, C, h, w] on the pipeline's device (before decoding)
  StageTimes times;
  GenerateOptions resolved;  ///< the options after model defaults were applied
};

/// A prompt's embeddings as the denoiser consumes them.
struct PromptEmbeds {
  Tensor embeds;  ///< [1, L, D] compute dtype, on the pipeline's device
  Tensor mask;    ///< [1, L] i32 (1 = token), on the pipeline's device
  Tensor ids;     ///< [1, L] i32 token ids on the CPU (for dumps; the denoiser does not read them)
};

/// One job's share of a batched denoising step.
struct DenoiseJob {
  Tensor* latents = nullptr;          ///< [1, C, h, w]; replaced by the stepped latents
  const PromptEmbeds* cond = nullptr;
  const PromptEmbeds* uncond = nullptr;  ///< used only when guidance > 1
  float guidance = 1.0f;
  Scheduler* scheduler = nullptr;     ///< this job's own scheduler, set_timesteps already called
  int step = 0;                       ///< index of the step to run
  /// Optional: receives this job's denoise tensors (latents.initial and the first step's
  /// model_output/noise_pred at step 0, latents.step_NNN after every step; stage_dump.hpp).
  DumpWriter* dump = nullptr;
};

class TextToImagePipeline {
 public:
  /// Loads tokenizer/, text_encoder/, transformer/, vae/ and scheduler/ of a diffusers folder
  /// (listed in model_index.json) onto `device`, computing in `dtype`.
  static TextToImagePipeline load(const std::string& model_dir, Device device, DType dtype = DType::f32);

  /// Fills the unset fields of `o` (0 steps or size, negative guidance, "" scheduler) from
  /// the model defaults, then check()s the result.
  GenerateOptions resolve(const GenerateOptions& o) const;
  /// What this model can make: steps >= 1, guidance finite and >= 0, width and height
  /// positive multiples of size_multiple(), a scheduler that runs this model. Throws
  /// Error(invalid_argument) naming the field. (Limits such as the most pixels or steps
  /// are the pipeline's: core/request_check.hpp.)
  void check(const GenerateOptions& resolved) const;
  GenerateResult generate(const GenerateOptions& o) const;

  // ---- the stages, for the engine ----
  /// Tokenize (pad to model_max_length) and encode one prompt.
  PromptEmbeds encode_prompt(const std::string& text) const;
  /// The scheduler `name` ("" = model default) for this model, with set_timesteps(steps) done.
  std::unique_ptr<Scheduler> make_job_scheduler(const std::string& name, int steps, int width, int height) const;
  /// Seeded noise [1, C, height/s, width/s] × init_noise_sigma in the compute dtype on the device
  /// (gaussian_noise of stages/pipeline/noise.hpp), or `initial` checked and moved there.
  Tensor prepare_latents(uint64_t seed, int width, int height, const Tensor* initial = nullptr) const;
  /// One denoising step for every job in `jobs` with a single transformer call: the batch is
  /// [uncond of the guided jobs..., cond of all jobs...] as diffusers orders it; then
  /// guidance uncond + g·(cond − uncond) and each job's scheduler step. Jobs must share a latent size.
  void denoise_step(const std::vector<DenoiseJob>& jobs) const;
  /// Latents [B, C, h, w] -> image [B, 3, H, W] in [-1, 1] (compute dtype, on the device).
  Tensor decode(const Tensor& latents, const TilingOptions* tiling = nullptr) const;
  /// Image [B, 3, H, W] -> u8 [B, H, W, 3] on the CPU (stages/post/image.hpp to_uint8).
  static Tensor to_image(const Tensor& image);

  Device device() const { return device_; }
  DType dtype() const { return dtype_; }
  const std::string& model_dir() const { return dir_; }
  const ClipTokenizer& tokenizer() const { return *tokenizer_; }
  const ClipTextEncoder& text_encoder() const { return *text_encoder_; }
  const PixArtTransformer& transformer() const { return *transformer_; }
  const VaeDecoder& vae() const { return *vae_; }
  const nlohmann::json& scheduler_config() const { return scheduler_config_; }
  /// Steps, guidance, scheduler, width and height used when a request leaves them unset.
  const nlohmann::json& defaults() const { return defaults_; }
  /// Pixels per latent cell times the patch size: width and height must be multiples of it.
  int size_multiple() const;

 private:
  std::string dir_;
  Device device_;
  DType dtype_ = DType::f32;
  std::shared_ptr<const ClipTokenizer> tokenizer_;
  std::shared_ptr<const ClipTextEncoder> text_encoder_;
  std::shared_ptr<const PixArtTransformer> transformer_;
  std::shared_ptr<const VaeDecoder> vae_;
  nlohmann::json scheduler_config_;
  nlohmann::json defaults_;
};

}  // namespace stagecraft
