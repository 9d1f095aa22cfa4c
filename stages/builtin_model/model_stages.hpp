#pragma once
// The model's stage types for the engine, as thin adapters over the sequential
// pipeline's per-stage functions (stages/pipeline/text_to_image.hpp), so that an
// engine run of one job is byte-identical to `stagecraft generate` with the same seed:
//
//   clip_text_encoder  request -> "prompt_embeds", "prompt_mask" (+ "negative_embeds",
//                      "negative_mask" when guidance > 1)
//   pixart_denoiser    iterative: joins with seeded latents and its own scheduler, one
//                      batched denoise_step per call (classifier-free guidance folded into
//                      the batch by denoise_step), leaves with "latents"
//   vae_decoder        "latents" -> "pixels" [1, 3, H, W] in [-1, 1]; params tiling: {tile, overlap}
//   postprocess        "pixels" -> "image" u8 [1, H, W, 3] on the CPU
//
// Every stage loads the model folder of the pipeline (model_dir) on its own device;
// stages on one device share one loaded copy. params.dtype (f32 | f16 | bf16) picks the
// compute dtype, f32 by default as in `stagecraft generate`.
//
// A request carrying a DumpWriter (Request::dump) gets each stage's tensors written
// under the names of stages/pipeline/stage_dump.hpp, the same as the sequential pipeline.
//
//   register_model_stages();   // called by register_builtin_stages()
namespace stagecraft {

void register_model_stages();

}  // namespace stagecraft
