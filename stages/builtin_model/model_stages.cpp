#include "stages/builtin_model/model_stages.hpp"

#include <map>
#include <mutex>

#include "core/error.hpp"
#include "stages/pipeline/stage_dump.hpp"
#include "stages/pipeline/text_to_image.hpp"
#include "stages/stage.hpp"

namespace stagecraft {
namespace {

/// One loaded copy of a model per (folder, device, dtype), shared by the stages that use it.
std::shared_ptr<const TextToImagePipeline> shared_pipeline(const StageContext& ctx) {
  SC_CHECK(!ctx.model_dir.empty(), Errc::invalid_argument,
           "stage '" << ctx.name << "' (" << ctx.type << ") needs a model: set `model:` in the pipeline file");
  const DType dtype = parse_dtype(ctx.params.value("dtype", std::string("f32")));
  static std::mutex mu;
  static std::map<std::string, std::weak_ptr<const TextToImagePipeline>> loaded;
  const std::string key = ctx.model_dir + "|" + ctx.device.str() + "|" + dtype_name(dtype);
  std::lock_guard<std::mutex> lock(mu);
  if (auto p = loaded[key].lock()) return p;
  auto p = std::make_shared<const TextToImagePipeline>(TextToImagePipeline::load(ctx.model_dir, ctx.device, dtype));
  loaded[key] = p;
  return p;
}

class ModelStage : public Stage {
 public:
  void load(const StageContext& ctx) override {
    ctx_ = ctx;
    pipe_ = shared_pipeline(ctx);
  }
  /// The model's own limits (size a multiple of its latent factor, a scheduler it can run,
  /// initial latents of its shape), checked at the engine's door: TextToImagePipeline::check.
  void check_request(const Request& r) const override { (void)resolved_options(r); }

 protected:
  /// The request with the model's defaults applied, as generate() resolves it.
  GenerateOptions resolved(const Packet& p) const { return resolved_options(p.request); }
  GenerateOptions resolved_options(const Request& r) const { return pipe_->resolve(options_of(r)); }

  StageContext ctx_;
  std::shared_ptr<const TextToImagePipeline> pipe_;
};

class ClipTextEncoderStage : public ModelStage {
 public:
  void run(std::vector<PacketPtr>& batch, Lane&) override {
    for (auto& p : batch) {
      const GenerateOptions o = resolved(*p);
      PromptEmbeds cond = pipe_->encode_prompt(o.prompt);
      p->tensors["prompt_embeds"] = cond.embeds;
      p->tensors["prompt_mask"] = cond.mask;
      dump_prompt(o.dump.get(), cond.ids, cond.mask, cond.embeds, false);
      if (o.guidance > 1.0f) {
        PromptEmbeds uncond = pipe_->encode_prompt(o.negative_prompt);
        dump_prompt(o.dump.get(), uncond.ids, uncond.mask, uncond.embeds, true);
        p->tensors["negative_embeds"] = uncond.embeds;
        p->tensors["negative_mask"] = uncond.mask;
      }
    }
  }
};

/// A job's denoising state between steps.
struct DenoiseState {
  GenerateOptions o;
  std::unique_ptr<Scheduler> scheduler;
  Tensor latents;
  PromptEmbeds cond, uncond;
};

class PixArtDenoiserStage : public ModelStage {
 public:
  StageTraits traits() const override { return {1 << 16, true}; }
  /// denoise_step needs one latent size per call; guided and unguided jobs may mix.
  std::string batch_key(const Packet& p) const override {
    const GenerateOptions o = resolved(p);
    return std::to_string(o.width) + "x" + std::to_string(o.height);
  }
  void run(std::vector<PacketPtr>& batch, Lane&) override {
    std::vector<DenoiseJob> jobs;
    for (auto& p : batch) {
      if (!p->state) join(*p);
      auto* st = static_cast<DenoiseState*>(p->state.get());
      DenoiseJob j;
      j.latents = &st->latents;
      j.cond = &st->cond;
      j.uncond = st->o.guidance > 1.0f ? &st->uncond : nullptr;
      j.guidance = st->o.guidance;
      j.scheduler = st->scheduler.get();
      j.step = p->step;
      j.dump = st->o.dump.get();
      jobs.push_back(j);
    }
    pipe_->denoise_step(jobs);
    for (auto& p : batch) {
      ++p->step;
      if (p->step < p->total_steps) continue;
      p->tensors["latents"] = static_cast<DenoiseState*>(p->state.get())->latents;
      p->state.reset();  // frees the scheduler; the latents live on in the packet
    }
  }
  bool finished(const Packet& p) const override { return p.total_steps > 0 && p.step >= p.total_steps; }

 private:
  void join(Packet& p) const {
    auto st = std::make_shared<DenoiseState>();
    st->o = resolved(p);
    st->scheduler = pipe_->make_job_scheduler(st->o.scheduler, st->o.steps, st->o.width, st->o.height);
    st->latents = pipe_->prepare_latents(st->o.seed, st->o.width, st->o.height, &st->o.initial_latents);
    st->cond = {p.tensor("prompt_embeds"), p.tensor("prompt_mask")};
    if (st->o.guidance > 1.0f) st->uncond = {p.tensor("negative_embeds"), p.tensor("negative_mask")};
    p.step = 0;
    p.total_steps = st->scheduler->num_steps();
    if (st->o.dump) st->o.dump->set_manifest({{"request", request_manifest(st->o)}});
    p.state = st;
  }
};

class VaeDecoderStage : public ModelStage {
 public:
  void load(const StageContext& ctx) override {
    ModelStage::load(ctx);
    if (ctx.params.contains("tiling")) {
      const auto& t = ctx.params["tiling"];
      SC_CHECK(t.is_object(), Errc::invalid_argument,
               "stage '" << ctx.name << "': tiling must be a map like {tile: 512, overlap: 64}");
      TilingOptions opt;
      opt.tile = t.value("tile", opt.tile);
      opt.overlap = t.value("overlap", opt.overlap);
      tiling_ = opt;
    }
  }
  void run(std::vector<PacketPtr>& batch, Lane&) override {
    for (auto& p : batch) {
      p->tensors["pixels"] = pipe_->decode(p->tensor("latents"), tiling_ ? &*tiling_ : nullptr);
      dump_tensor(p->request.dump.get(), dump_stage::decode, "image", p->tensors["pixels"]);
    }
  }

 private:
  std::optional<TilingOptions> tiling_;
};

class PostprocessStage : public Stage {
 public:
  void run(std::vector<PacketPtr>& batch, Lane&) override {
    for (auto& p : batch) {
      p->tensors["image"] = TextToImagePipeline::to_image(p->tensor("pixels"));
      dump_tensor(p->request.dump.get(), dump_stage::postprocess, "image_u8", p->tensors["image"]);
      p->tensors.erase("pixels");  // the float image is 4x the bytes and nobody reads it now
    }
  }
};

}  // namespace

void register_model_stages() {
  register_stage_type("clip_text_encoder", [] { return std::make_unique<ClipTextEncoderStage>(); });
  register_stage_type("pixart_denoiser", [] { return std::make_unique<PixArtDenoiserStage>(); });
  register_stage_type("vae_decoder", [] { return std::make_unique<VaeDecoderStage>(); });
  register_stage_type("postprocess", [] { return std::make_unique<PostprocessStage>(); });
}

}  // namespace stagecraft
