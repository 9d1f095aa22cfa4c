// TextToImagePipeline: see text_to_image.hpp. Mirrors diffusers' PixArtAlphaPipeline.__call__.
#include "stages/pipeline/text_to_image.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/error.hpp"
#include "core/request_defaults.hpp"
#include "kernels/ops.hpp"
#include "stages/model/model_index.hpp"
#include "stages/model/weights.hpp"
#include "stages/pipeline/noise.hpp"
#include "stages/pipeline/stage_dump.hpp"
#include "stages/post/image.hpp"

namespace fs = std::filesystem;

namespace stagecraft {
namespace {

using Ms = std::chrono::duration<double, std::milli>;

// Waits for the device work that produced `t` (timing only): a device-to-host copy of
// one element returns after the stream has drained up to it.
void wait_for(const Tensor& t) {
  if (!t.defined() || t.device().is_cpu()) return;
  ops::to_device(ops::contiguous(t).reshape({-1}).slice(0, 0, 1), Device::cpu());
}

Tensor host_i32(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty({1, static_cast<int64_t>(v.size())}, DType::i32, Device::cpu());
  std::copy(v.begin(), v.end(), t.data_as<int32_t>());
  return t;
}

}  // namespace

TextToImagePipeline TextToImagePipeline::load(const std::string& model_dir, Device device, DType dtype) {
  SC_CHECK(dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16, Errc::invalid_argument,
           "compute dtype must be f32, f16 or bf16, got " << dtype_name(dtype));
  const ModelIndex index = ModelIndex::open(model_dir);
  TextToImagePipeline p;
  p.dir_ = model_dir;
  p.device_ = device;
  p.dtype_ = dtype;
  p.tokenizer_ = std::make_shared<ClipTokenizer>(ClipTokenizer::load(index.component_dir("tokenizer")));
  p.text_encoder_ =
      std::make_shared<ClipTextEncoder>(ClipTextEncoder::load(index.component_dir("text_encoder"), dtype, device));
  p.transformer_ =
      std::make_shared<PixArtTransformer>(PixArtTransformer::load(index.component_dir("transformer"), dtype, device));
  p.vae_ = std::make_shared<VaeDecoder>(VaeDecoder::load(index.component_dir("vae"), dtype, device));
  p.scheduler_config_ = read_json_file((fs::path(index.component_dir("scheduler")) / "scheduler_config.json").string());

  SC_CHECK(p.text_encoder_->hidden_size() == p.transformer_->caption_channels(), Errc::shape_mismatch,
           model_dir << ": the text encoder's hidden_size " << p.text_encoder_->hidden_size()
                     << " differs from the transformer's caption_channels " << p.transformer_->caption_channels());
  SC_CHECK(p.vae_->latent_channels() == p.transformer_->in_channels(), Errc::shape_mismatch,
           model_dir << ": the VAE has " << p.vae_->latent_channels() << " latent channels but the transformer takes "
                     << p.transformer_->in_channels());
  SC_CHECK(p.tokenizer_->model_max_length() <= p.text_encoder_->max_positions(), Errc::shape_mismatch,
           model_dir << ": tokenizer model_max_length " << p.tokenizer_->model_max_length()
                     << " exceeds the text encoder's max_position_embeddings " << p.text_encoder_->max_positions());

  // stagecraft.json defaults pass the pipeline file's checks (core/request_defaults.hpp);
  // the loaders above have range-checked sample_size and the VAE's levels.
  nlohmann::json d = read_model_defaults(model_dir);
  const int native = p.transformer_->sample_size() * p.vae_->scale_factor();
  if (!d.contains("steps")) d["steps"] = 20;
  if (!d.contains("guidance")) d["guidance"] = 4.5;
  if (!d.contains("scheduler")) d["scheduler"] = "";
  if (!d.contains("width")) d["width"] = native;
  if (!d.contains("height")) d["height"] = native;
  p.defaults_ = d;
  return p;
}

int TextToImagePipeline::size_multiple() const { return vae_->scale_factor() * transformer_->patch_size(); }

GenerateOptions TextToImagePipeline::resolve(const GenerateOptions& in) const {
  GenerateOptions o = in;
  // Only unset fields take defaults: a negative step count or size is the caller's
  // mistake, and check() names it instead of quietly replacing it.
  if (o.steps == 0) o.steps = defaults_["steps"].get<int>();
  if (std::isfinite(o.guidance) && o.guidance < 0) o.guidance = defaults_["guidance"].get<float>();
  if (o.scheduler.empty()) o.scheduler = defaults_["scheduler"].get<std::string>();
  if (o.scheduler.empty()) o.scheduler = make_scheduler("", scheduler_config_)->name();
  if (o.width == 0) o.width = defaults_["width"].get<int>();
  if (o.height == 0) o.height = defaults_["height"].get<int>();
  check(o);
  return o;
}

void TextToImagePipeline::check(const GenerateOptions& o) const {
  auto refuse = [](const std::string& field, const std::string& what) {
    throw Error(Errc::invalid_argument, "request field '" + field + "': " + what);
  };
  if (o.steps < 1) refuse("steps", std::to_string(o.steps) + " is not a step count; use at least 1");
  if (!std::isfinite(o.guidance) || o.guidance < 0)
    refuse("guidance", std::to_string(o.guidance) + " is not a finite guidance scale >= 0; use e.g. 4.5");
  const int m = size_multiple();
  for (const auto& [field, v] : {std::pair<const char*, int>{"width", o.width}, {"height", o.height}})
    if (v <= 0 || v % m != 0) {
      const int lo = std::max(m, v / m * m);
      refuse(field, std::to_string(v) + " is not a positive multiple of " + std::to_string(m) +
                        ", this model's latent factor (VAE scale x patch size); use e.g. " + std::to_string(lo) +
                        " or " + std::to_string(lo + m));
    }
  if (o.initial_latents.defined()) {
    const int s = vae_->scale_factor();
    const Shape want = {1, vae_->latent_channels(), o.height / s, o.width / s};
    if (o.initial_latents.shape() != want)
      refuse("initial_latents", "shape " + o.initial_latents.shape_str() + " does not fit " + std::to_string(o.width) +
                                    "x" + std::to_string(o.height) + "; this model wants " + shape_str(want));
  }
  try {
    make_scheduler(o.scheduler, scheduler_config_);
  } catch (const Error& e) {
    // make_scheduler's message says which names exist, or why this one cannot run this model.
    std::string why = e.what();
    if (auto at = why.rfind(" ["); at != std::string::npos && why.back() == ']')
      why.resize(at);  // drop the [file:line]: this is the caller's mistake, not a bug
    refuse("scheduler", "'" + o.scheduler + "': " + why);
  }
}

PromptEmbeds TextToImagePipeline::encode_prompt(const std::string& text) const {
  const TokenizedText tok = tokenizer_->encode(text);
  PromptEmbeds out;
  const Tensor ids = host_i32(tok.ids);
  const Tensor mask = host_i32(tok.mask);
  // The shipped model was trained with the padding mask in both the text encoder and the
  // denoiser's cross-attention (as PixArt pipelines pass it); with causal attention the
  // mask changes only the padded positions, which the denoiser masks out anyway.
  out.embeds = text_encoder_->forward(ids, &mask);
  out.mask = ops::to_device(mask, device_);
  out.ids = ids;
  return out;
}

std::unique_ptr<Scheduler> TextToImagePipeline::make_job_scheduler(const std::string& name, int steps, int width,
                                                                  int height) const {
  auto s = make_scheduler(name, scheduler_config_);
  const int64_t cell = size_multiple();
  s->set_timesteps(steps, (width / cell) * (height / cell));
  return s;
}

Tensor TextToImagePipeline::prepare_latents(uint64_t seed, int width, int height, const Tensor* initial) const {
  const int s = vae_->scale_factor();
  const Shape shape = {1, vae_->latent_channels(), height / s, width / s};
  if (initial && initial->defined()) {
    SC_CHECK(initial->shape() == shape, Errc::shape_mismatch,
             "initial latents must be " << shape_str(shape) << " for " << width << "x" << height << ", got "
                                        << initial->shape_str());
    return ops::cast(ops::to_device(*initial, device_), dtype_);
  }
  // init_noise_sigma is 1 for every scheduler here, so the noise is used as drawn.
  return ops::to_device(gaussian_noise(shape, seed).to(dtype_), device_);
}

void TextToImagePipeline::denoise_step(const std::vector<DenoiseJob>& jobs) const {
  SC_CHECK(!jobs.empty(), Errc::invalid_argument, "denoise_step needs at least one job");
  std::vector<Tensor> lat, emb, mask;
  std::vector<float> ts;
  std::vector<size_t> guided;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const DenoiseJob& job = jobs[j];
    SC_CHECK(job.latents && job.cond && job.scheduler, Errc::invalid_argument,
             "denoise job " << j << " lacks latents, prompt embeddings or a scheduler");
    SC_CHECK(job.latents->shape() == jobs[0].latents->shape(), Errc::shape_mismatch,
             "jobs of one denoise batch must share a latent size: " << job.latents->shape_str() << " vs "
                                                                   << jobs[0].latents->shape_str());
    if (job.guidance > 1.0f) {
      SC_CHECK(job.uncond, Errc::invalid_argument, "denoise job " << j << " uses guidance but has no negative prompt");
      guided.push_back(j);
      lat.push_back(*job.latents);
      emb.push_back(job.uncond->embeds);
      mask.push_back(job.uncond->mask);
      ts.push_back(job.scheduler->model_timestep(job.step));
    }
  }
  for (const DenoiseJob& job : jobs) {
    lat.push_back(*job.latents);
    emb.push_back(job.cond->embeds);
    mask.push_back(job.cond->mask);
    ts.push_back(job.scheduler->model_timestep(job.step));
  }
  const Tensor x = lat.size() == 1 ? lat[0] : ops::cat(lat, 0);
  const Tensor e = emb.size() == 1 ? emb[0] : ops::cat(emb, 0);
  const Tensor m = mask.size() == 1 ? mask[0] : ops::cat(mask, 0);
  const Tensor t = ops::to_device(Tensor::from_vector(ts, {static_cast<int64_t>(ts.size())}), device_);
  Tensor pred = transformer_->forward(x, t, e, &m);
  const Tensor raw_pred = pred;  // as the transformer returned it (learned sigma already dropped), for dumps
  // Learned-sigma checkpoints predict 2·C channels; PixArt pipelines keep the first C.
  const int64_t C = jobs[0].latents->size(1);
  if (pred.size(1) != C) pred = ops::contiguous(pred.slice(1, 0, C));

  const int64_t G = static_cast<int64_t>(guided.size());
  // Every job's next latents are computed before any is stored, so a throw leaves the
  // jobs' latents as they were and the engine can rerun each job alone (stages/stage.hpp).
  std::vector<Tensor> stepped(jobs.size());
  for (size_t j = 0; j < jobs.size(); ++j) {
    const DenoiseJob& job = jobs[j];
    const int64_t row = G + static_cast<int64_t>(j);
    Tensor out = pred.slice(0, row, row + 1);
    if (job.guidance > 1.0f) {
      const int64_t urow = std::find(guided.begin(), guided.end(), j) - guided.begin();
      const Tensor uncond = pred.slice(0, urow, urow + 1);
      // diffusers: uncond + g · (cond − uncond)
      out = ops::axpby(uncond, 1.0f, ops::axpby(out, 1.0f, uncond, -1.0f), job.guidance);
    }
    if (job.dump && job.step == 0) {
      dump_tensor(job.dump, dump_stage::denoise, "latents.initial", *job.latents);
      // This job's rows of the transformer call, in the batch order it used: [uncond, cond].
      Tensor rows = raw_pred.slice(0, row, row + 1);
      if (job.guidance > 1.0f) {
        const int64_t urow = std::find(guided.begin(), guided.end(), j) - guided.begin();
        rows = ops::cat({raw_pred.slice(0, urow, urow + 1), rows}, 0);
      }
      dump_tensor(job.dump, dump_stage::denoise, dump_step_name("model_output", 0), rows);
      dump_tensor(job.dump, dump_stage::denoise, dump_step_name("noise_pred", 0), out);
      job.dump->set_manifest(scheduler_manifest(*job.scheduler, scheduler_config_));
    }
    stepped[j] = job.scheduler->step(out, job.step, *job.latents);
  }
  for (size_t j = 0; j < jobs.size(); ++j) {
    const DenoiseJob& job = jobs[j];
    *job.latents = std::move(stepped[j]);
    if (job.dump) dump_tensor(job.dump, dump_stage::denoise, dump_step_name("latents", job.step), *job.latents);
  }
}

Tensor TextToImagePipeline::decode(const Tensor& latents, const TilingOptions* tiling) const {
  return vae_->decode(latents, tiling);
}

Tensor TextToImagePipeline::to_image(const Tensor& image) { return to_uint8(image); }

GenerateResult TextToImagePipeline::generate(const GenerateOptions& in) const {
  const auto t0 = std::chrono::steady_clock::now();
  GenerateResult r;
  r.resolved = resolve(in);
  const GenerateOptions& o = r.resolved;
  const bool cfg = o.guidance > 1.0f;

  DumpWriter* dump = o.dump.get();
  PromptEmbeds cond = encode_prompt(o.prompt);
  dump_prompt(dump, cond.ids, cond.mask, cond.embeds, false);
  PromptEmbeds uncond;
  if (cfg) {
    uncond = encode_prompt(o.negative_prompt);
    dump_prompt(dump, uncond.ids, uncond.mask, uncond.embeds, true);
  }
  wait_for(cfg ? uncond.embeds : cond.embeds);
  const auto t1 = std::chrono::steady_clock::now();

  auto sched = make_job_scheduler(o.scheduler, o.steps, o.width, o.height);
  Tensor latents = prepare_latents(o.seed, o.width, o.height, &o.initial_latents);
  for (int i = 0; i < sched->num_steps(); ++i) {
    DenoiseJob job;
    job.latents = &latents;
    job.cond = &cond;
    job.uncond = cfg ? &uncond : nullptr;
    job.guidance = o.guidance;
    job.scheduler = sched.get();
    job.step = i;
    job.dump = dump;
    denoise_step({job});
  }
  wait_for(latents);
  const auto t2 = std::chrono::steady_clock::now();

  const Tensor image = decode(latents, o.tiling ? &*o.tiling : nullptr);
  wait_for(image);
  const auto t3 = std::chrono::steady_clock::now();
  dump_tensor(dump, dump_stage::decode, "image", image);

  r.image = to_image(image);
  dump_tensor(dump, dump_stage::postprocess, "image_u8", r.image);
  if (dump) dump->set_manifest({{"request", request_manifest(o)}});
  r.latents = latents;
  const auto t4 = std::chrono::steady_clock::now();
  r.times.encode_ms = Ms(t1 - t0).count();
  r.times.denoise_ms = Ms(t2 - t1).count();
  r.times.decode_ms = Ms(t3 - t2).count();
  r.times.post_ms = Ms(t4 - t3).count();
  r.times.total_ms = Ms(t4 - t0).count();
  return r;
}

GenerateOptions options_of(const Request& r) {
  GenerateOptions o;
  o.prompt = r.prompt;
  o.negative_prompt = r.negative_prompt;
  o.seed = r.seed;
  o.steps = r.steps;
  o.guidance = r.guidance;
  o.width = r.width;
  o.height = r.height;
  o.scheduler = r.scheduler;
  o.initial_latents = r.initial_latents;
  o.dump = r.dump;
  return o;
}

}  // namespace stagecraft
