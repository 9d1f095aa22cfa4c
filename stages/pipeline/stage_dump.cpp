// Stage dump helpers: see stage_dump.hpp.
#include "stages/pipeline/stage_dump.hpp"

#include <cstdio>

#include "kernels/ops.hpp"
#include "stages/schedulers/scheduler.hpp"

namespace stagecraft {

void dump_tensor(DumpWriter* dump, const std::string& stage, const std::string& name, const Tensor& t) {
  if (!dump || !t.defined()) return;
  // Device tensors come to the host first (on a CUDA lane this waits for the stream,
  // which a dumping run accepts); f16/bf16 widen to f32 exactly, so nothing is lost.
  Tensor host = t.device().is_cpu() ? t : ops::to_device(t, Device::cpu());
  if (is_floating(host.dtype()) && host.dtype() != DType::f32) host = host.to(DType::f32);
  dump->add(stage, name, host);
}

std::string dump_step_name(const std::string& base, int step) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%03d", step);
  return base + ".step_" + buf;
}

void dump_prompt(DumpWriter* dump, const Tensor& ids, const Tensor& mask, const Tensor& embeds, bool negative) {
  if (!dump) return;
  const std::string prefix = negative ? "negative_" : "";
  dump_tensor(dump, dump_stage::text, prefix + "token_ids", ids);
  dump_tensor(dump, dump_stage::text, prefix + "attention_mask", mask);
  dump_tensor(dump, dump_stage::text, prefix + "prompt_embeds", embeds);
}

nlohmann::json scheduler_manifest(const Scheduler& s, const nlohmann::json& model_scheduler_config) {
  nlohmann::json model_ts = nlohmann::json::array();
  for (int i = 0; i < s.num_steps(); ++i) model_ts.push_back(s.model_timestep(i));
  return {{"scheduler",
           {{"name", s.name()}, {"prediction_type", s.prediction_type()}, {"config", model_scheduler_config}}},
          {"timesteps", s.timesteps()},
          {"sigmas", s.sigmas()},
          {"model_timesteps", model_ts}};
}

nlohmann::json request_manifest(const GenerateOptions& o) {
  return {{"prompt", o.prompt},     {"negative_prompt", o.negative_prompt},
          {"seed", o.seed},         {"steps", o.steps},
          {"guidance", o.guidance}, {"width", o.width},
          {"height", o.height},     {"scheduler", o.scheduler},
          {"initial_latents", o.initial_latents.defined() ? "supplied" : "seeded"}};
}

}  // namespace stagecraft
