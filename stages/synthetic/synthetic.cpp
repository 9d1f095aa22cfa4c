#include "stages/synthetic/synthetic.hpp"

#include <cstring>
#include <thread>

#include "core/error.hpp"

namespace stagecraft {

void SyntheticStage::load(const StageContext& ctx) {
  ctx_ = ctx;
  cost_ = SyntheticCost::from_params(ctx.params, ctx.name);
  if (ctx.params.contains("output_bytes")) {
    const auto& v = ctx.params["output_bytes"];
    SC_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0, Errc::invalid_argument,
             "stage '" << ctx.name << "': output_bytes must be an integer >= 0, got " << v.dump());
    output_bytes_ = v.get<int64_t>();
  }
  if (ctx.params.contains("output_name")) {
    const auto& v = ctx.params["output_name"];
    SC_CHECK(v.is_string() && !v.get<std::string>().empty(), Errc::invalid_argument,
             "stage '" << ctx.name << "': output_name must be a non-empty string, got " << v.dump());
    output_name_ = v.get<std::string>();
  }
}

void SyntheticStage::write_output(Packet& p) const {
  if (output_bytes_ <= 0) return;
  if (ctx_.device.is_cpu()) {
    Tensor t = Tensor::empty({output_bytes_}, DType::u8, ctx_.device);
    std::memset(t.data(), static_cast<int>(p.job_id & 0xff), static_cast<size_t>(output_bytes_));
    p.tensors[output_name_] = std::move(t);
  } else {
    p.tensors[output_name_] = Tensor::zeros({output_bytes_}, DType::u8, ctx_.device);
  }
}

void SyntheticStage::run(std::vector<PacketPtr>& batch, Lane&) {
  spend(cost_.of_batch(batch.size()));
  for (auto& p : batch) write_output(*p);
  batches_.fetch_add(1);
  items_.fetch_add(batch.size());
}

void SleepStage::spend(std::chrono::nanoseconds d) {
  // sleep_until from a fixed start keeps the cost exact however the sleep is split.
  if (d.count() > 0) std::this_thread::sleep_until(Clock::now() + d);
}

void SpinStage::spend(std::chrono::nanoseconds d) {
  if (d.count() <= 0) return;
  const auto end = Clock::now() + d;
  volatile uint64_t sink = 0;  // real work the optimiser cannot remove
  while (Clock::now() < end)
    for (int i = 0; i < 256; ++i) sink = sink * 6364136223846793005ULL + 1442695040888963407ULL;
}

int SyntheticDenoiserStage::steps_for(const Packet& p) const {
  if (p.request.steps > 0) return p.request.steps;
  if (ctx_.defaults.contains("steps") && ctx_.defaults["steps"].is_number_integer())
    return ctx_.defaults["steps"].get<int>();
  if (ctx_.params.contains("steps") && ctx_.params["steps"].is_number_integer())
    return ctx_.params["steps"].get<int>();
  return 20;
}

std::pair<int, int> SyntheticDenoiserStage::size_for(const Packet& p) const {
  auto pick = [&](int req, const char* key) {
    if (req > 0) return req;
    if (ctx_.defaults.contains(key) && ctx_.defaults[key].is_number_integer()) return ctx_.defaults[key].get<int>();
    return 64;
  };
  return {pick(p.request.width, "width"), pick(p.request.height, "height")};
}

std::string SyntheticDenoiserStage::batch_key(const Packet& p) const {
  const auto [w, h] = size_for(p);
  return std::to_string(w) + "x" + std::to_string(h);
}

void SyntheticDenoiserStage::run(std::vector<PacketPtr>& batch, Lane&) {
  for (auto& p : batch) {
    if (p->total_steps == 0) {  // joins now
      p->total_steps = steps_for(*p);
      SC_CHECK(p->total_steps > 0, Errc::invalid_argument,
               "stage '" << ctx_.name << "': job " << p->job_id << " asks for " << p->total_steps
                         << " steps; use at least 1");
      p->step = 0;
    }
    SC_CHECK(p->step < p->total_steps, Errc::internal,
             "stage '" << ctx_.name << "' was given job " << p->job_id << " after its last step ("
                       << p->step << " of " << p->total_steps << ")");
  }
  spend(cost_.of_batch(batch.size()));
  for (auto& p : batch) {
    ++p->step;
    if (p->step < p->total_steps) continue;
    const auto [w, h] = size_for(*p);
    Tensor latents = Tensor::empty({1, 4, h / 8, w / 8}, DType::f32, Device::cpu());
    latents.fill(static_cast<double>(p->step));
    p->tensors["latents"] = std::move(latents);
    write_output(*p);
  }
  batches_.fetch_add(1);
  items_.fetch_add(batch.size());
}

}  // namespace stagecraft
