#pragma once
// Registers every stage type that ships with Stagecraft. Registration is
// explicit, not by static registrar objects: a registrar inside a static library
// is dropped by the linker when nothing references its object file, so the
// engine and the CLI call this once before creating stages. Idempotent and
// thread-safe.
//
//   register_builtin_stages();
//   auto stage = create_stage("sleep");
namespace stagecraft {

void register_builtin_stages();

}  // namespace stagecraft
