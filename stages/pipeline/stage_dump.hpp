#pragma once
// What the text-to-image stages write to a DumpWriter (core/dump.hpp) when a job asks
// for a dump (`--dump DIR`). The names are the contract of docs/numerics.md, shared by
// the sequential pipeline, the engine's model stages and tools/reference_dump.py:
//
//   00-text.safetensors        token_ids i32 [1, L], attention_mask i32 [1, L], prompt_embeds f32 [1, L, D]
//                              (+ negative_token_ids, negative_attention_mask, negative_prompt_embeds
//                               when guidance > 1)
//   01-denoise.safetensors     latents.initial, latents.step_000 ... (after every step) f32 [1, C, h, w],
//                              model_output.step_000 (this job's rows of the first transformer call:
//                              [uncond, cond] when guided; learned-sigma channels dropped) and
//                              noise_pred.step_000 (after guidance: what the scheduler steps with)
//   02-decode.safetensors      image f32 [1, 3, H, W] in [-1, 1] before the uint8 conversion
//   03-postprocess.safetensors image_u8 u8 [1, H, W, 3]
//
// Stages stay compute-only: the writer travels with the job (GenerateOptions::dump,
// Request::dump, DenoiseJob::dump) and every helper here is a no-op for a null writer.
//
//   dump_tensor(o.dump.get(), dump_stage::decode, "image", image);   // to host, floats as f32
#include <string>

#include <nlohmann/json.hpp>

#include "core/dump.hpp"
#include "core/tensor.hpp"
#include "stages/pipeline/text_to_image.hpp"

namespace stagecraft {

namespace dump_stage {
inline constexpr const char* text = "text";
inline constexpr const char* denoise = "denoise";
inline constexpr const char* decode = "decode";
inline constexpr const char* postprocess = "postprocess";
}  // namespace dump_stage

/// Adds `t` to `dump` under stage/name, copied to the host; floating tensors are stored
/// as f32 (f16/bf16 widen exactly), integers as they are. No-op when `dump` is null.
void dump_tensor(DumpWriter* dump, const std::string& stage, const std::string& name, const Tensor& t);

/// "latents.step_007": a step-indexed name that sorts in step order.
std::string dump_step_name(const std::string& base, int step);

/// token_ids / attention_mask / prompt_embeds, prefixed "negative_" for the unconditional prompt.
void dump_prompt(DumpWriter* dump, const Tensor& ids, const Tensor& mask, const Tensor& embeds, bool negative);

/// Manifest fields of a job's scheduler: {"scheduler": {"name", "prediction_type", "config"},
/// "timesteps", "sigmas", "model_timesteps" (the f32 values the transformer is given)}.
nlohmann::json scheduler_manifest(const Scheduler& s, const nlohmann::json& model_scheduler_config);

/// The request as it ran (model defaults applied): prompt, negative_prompt, seed, steps,
/// guidance, width, height, scheduler, and whether initial latents were supplied.
nlohmann::json request_manifest(const GenerateOptions& resolved);

}  // namespace stagecraft
