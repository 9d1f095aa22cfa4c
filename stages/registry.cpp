// The process-wide stage registry and plugin loading (stages/stage.hpp).
#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <map>
#include <mutex>

#include "core/error.hpp"
#include "stages/stage.hpp"

namespace stagecraft {
namespace {

struct Registry {
  std::mutex mu;
  std::map<std::string, StageFactory> factories;
  /// Bumped by every registration: a plugin whose registration function ran but
  /// left this unchanged registered into a private copy of the registry.
  std::atomic<uint64_t> registrations{0};
  std::mutex plugin_mu;  ///< serialises plugin loads; held while a plugin registers
  std::map<std::string, void*> plugins;  ///< canonical path -> handle, never closed
};

Registry& registry() {
  static Registry* r = new Registry;  // leaked: factories may run during static destruction
  return *r;
}

std::string known_types_list() {
  const auto types = stage_types();
  std::string s;
  for (size_t i = 0; i < types.size(); ++i) s += (i ? ", " : "") + types[i];
  return s.empty() ? "(none registered)" : s;
}

}  // namespace

void register_stage_type(const std::string& type, StageFactory factory) {
  SC_CHECK(!type.empty(), Errc::invalid_argument, "register_stage_type: the type name is empty");
  SC_CHECK(factory != nullptr, Errc::invalid_argument, "register_stage_type('" << type << "'): the factory is empty");
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.factories[type] = std::move(factory);
  r.registrations.fetch_add(1);
}

bool stage_type_known(const std::string& type) {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  return r.factories.count(type) > 0;
}

std::vector<std::string> stage_types() {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<std::string> out;
  for (const auto& [name, f] : r.factories) out.push_back(name);
  return out;  // std::map keeps them sorted
}

std::unique_ptr<Stage> create_stage(const std::string& type) {
  StageFactory factory;
  {
    auto& r = registry();
    std::lock_guard<std::mutex> lock(r.mu);
    auto it = r.factories.find(type);
    if (it != r.factories.end()) factory = it->second;
  }
  // Checked outside the lock: known_types_list() takes it again.
  SC_CHECK(factory, Errc::not_found,
           "unknown stage type '" << type << "'; known types: " << known_types_list()
                                  << ". Check the spelling, or name the plugin that provides it (plugin: PATH)");
  auto stage = factory();  // outside the lock: a constructor may register or create stages
  SC_CHECK(stage != nullptr, Errc::internal, "the factory of stage type '" << type << "' returned no stage");
  return stage;
}

void load_stage_plugin(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  SC_CHECK(fs::is_regular_file(path, ec), Errc::not_found,
           "stage plugin '" << path << "' not found; give the path of a shared library (.so) that exports "
                            << "extern \"C\" void stagecraft_register_stages()");
  const std::string key = fs::weakly_canonical(path, ec).string();

  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.plugin_mu);
  if (r.plugins.count(key)) return;  // its types are registered already

  // dlopen resolves relative names through the library search path, not the cwd.
  const std::string open_path = fs::path(path).has_parent_path() ? path : "./" + path;
  dlerror();
  void* handle = dlopen(open_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* why = dlerror();
    SC_FAIL(Errc::io, "cannot load stage plugin '" << path << "': " << (why ? why : "unknown dlopen error")
                                                   << ". Build it for this platform and link it like "
                                                   << "examples/custom_stage (see docs/pipeline-config.md)");
  }
  dlerror();
  void* sym = dlsym(handle, "stagecraft_register_stages");
  const char* sym_err = dlerror();
  if (!sym || sym_err) {
    dlclose(handle);
    SC_FAIL(Errc::not_found, "stage plugin '" << path << "' does not export the symbol stagecraft_register_stages"
                                              << (sym_err ? std::string(" (") + sym_err + ")" : std::string())
                                              << "; define extern \"C\" void stagecraft_register_stages() in it");
  }
  const uint64_t before = r.registrations.load();
  try {
    reinterpret_cast<void (*)()>(sym)();
  } catch (const std::exception& e) {
    // Types it registered before throwing stay; the handle stays open because their factories live in it.
    r.plugins[key] = handle;
    SC_FAIL(Errc::invalid_argument, "stage plugin '" << path << "': stagecraft_register_stages threw: " << e.what());
  }
  r.plugins[key] = handle;  // never closed: registered factories point into it
  SC_CHECK(r.registrations.load() != before, Errc::invalid_argument,
           "stage plugin '" << path << "' registered no stage type in this process. Either its "
                            << "stagecraft_register_stages() calls no register_stage_type, or the host executable "
                            << "does not export stagecraft's symbols, so the plugin used a private copy of the "
                            << "registry: link the host with ENABLE_EXPORTS (-rdynamic)");
}

}  // namespace stagecraft
