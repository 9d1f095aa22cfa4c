#include "cli/serve_flags.hpp"

#include <csignal>
#include <cstdio>
#include <memory>
#include <tuple>

#include "stages/post/image.hpp"

namespace stagecraft::cli {

namespace {

service::JobServer* g_server = nullptr;

extern "C" void on_stop_signal(int) {
  if (g_server) g_server->request_drain();  // an atomic store and an eventfd write: signal-safe
}

}  // namespace

void ServeFlags::add_to(CLI::App& app) {
  client_timeout_ms = opt.client_timeout.count();
  http_read_timeout_ms = http_opt.read_timeout.count();
  app.add_option("--bind", opt.bind, "ZeroMQ address to bind (loopback by default)")->capture_default_str()
      ->envname("STAGECRAFT_BIND");
  app.add_option("--http", http,
                 "HOST:PORT of the HTTP side (/healthz, /readyz, /metrics, /v1/images/generations); "
                 "port 0 picks a free one, 'off' disables it")->capture_default_str()
      ->envname("STAGECRAFT_HTTP");
  app.add_option("--http-read-timeout-ms", http_read_timeout_ms,
                 "a request must arrive whole within this; slower senders are cut off")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(10), int64_t(3600000)));
  app.add_option("--http-max-body-bytes", http_opt.max_body_bytes, "larger HTTP bodies get 413")->capture_default_str()
      ->check(CLI::Range(size_t(1024), size_t(1) << 30));
  app.add_option("--price-per-device-hour", opt.price_per_device_hour,
                 "what one device (lane) costs per hour, for the cost-per-million-images metric "
                 "(default: the pipeline file's pricing.device_hour)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-jobs-per-client", opt.max_jobs_per_client, "jobs one client may have in flight")->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--max-images-per-job", opt.max_images_per_job, "most num_images of one submit")->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--max-message-bytes", opt.max_message_bytes, "larger requests drop the connection")->capture_default_str()
      ->check(CLI::Range(int64_t(1024), int64_t(1) << 31));
  app.add_option("--client-timeout-ms", client_timeout_ms,
                 "a client silent this long (no ping) has its jobs cancelled")->capture_default_str()
      ->check(CLI::Range(int64_t(100), int64_t(86400000)));
  app.add_option("--curve-secret", curve_secret, "CurveZMQ: file with the server's Z85 secret key")
      ->check(CLI::ExistingFile);
  app.add_option("--curve-clients", curve_clients, "CurveZMQ: file of allowed client public keys, one per line")
      ->check(CLI::ExistingFile);
}

std::pair<std::string, uint16_t> http_address(const std::string& option, const std::string& value) {
  const auto colon = value.rfind(':');
  SC_CHECK(colon != std::string::npos, Errc::invalid_argument,
           option << " wants HOST:PORT" << (option == "--http" ? " or off" : "") << ", got '" << value << "'");
  const std::string port = value.substr(colon + 1);
  SC_CHECK(!port.empty() && port.find_first_not_of("0123456789") == std::string::npos && port.size() <= 5 &&
               std::stoi(port) < 65536,
           Errc::invalid_argument, option << " port '" << port << "' is not a port number");
  return {value.substr(0, colon), static_cast<uint16_t>(std::stoi(port))};
}

int ServeFlags::serve(JobRunner& runner, const PipelineSpec& spec, const std::string& file, const CLI::App& app) {
  SC_CHECK(curve_secret.empty() == curve_clients.empty(), Errc::invalid_argument,
           "--curve-secret and --curve-clients go together (the key, and who may connect)");
  if (!curve_secret.empty()) opt.curve = service::CurveOptions{curve_secret, curve_clients};
  opt.client_timeout = std::chrono::milliseconds(client_timeout_ms);
  if (!app.count("--price-per-device-hour")) opt.price_per_device_hour = spec.price_per_device_hour;
  service::JobServer server(runner, spec, opt, [](const Tensor& rgb) { return encode_png(rgb); });
  std::unique_ptr<service::HttpGateway> gateway;
  if (http != "off") {
    std::tie(http_opt.host, http_opt.port) = http_address("--http", http);
    http_opt.read_timeout = std::chrono::milliseconds(http_read_timeout_ms);
    gateway = std::make_unique<service::HttpGateway>(server, http_opt);
    std::fprintf(stderr, "HTTP on http://%s:%u (/v1/images/generations, /metrics, /healthz, /readyz)\n",
                 http_opt.host.c_str(), unsigned(gateway->port()));
  }
  g_server = &server;
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGINT, on_stop_signal);
  std::fprintf(stderr, "serving %s on %s (SIGTERM or Ctrl-C drains and stops)\n", file.c_str(),
               server.endpoint().c_str());
  server.run();
  g_server = nullptr;
  gateway.reset();
  const auto& c = server.counters();
  std::fprintf(stderr, "drained: %llu jobs accepted, %llu results, %llu errors\n",
               (unsigned long long)c.accepted.load(), (unsigned long long)c.results.load(),
               (unsigned long long)c.errors.load());
  return 0;
}

}  // namespace stagecraft::cli
