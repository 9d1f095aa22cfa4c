#pragma once
// Atoms of the engine's actor protocol (CAF 0.17: atom_constant, at most 10 characters).
#include <caf/atom.hpp>

namespace stagecraft::actors {

using credit_atom = caf::atom_constant<caf::atom("credit")>;    ///< a downstream credit may be free
using done_atom = caf::atom_constant<caf::atom("done")>;        ///< the lane finished batch `id`
using flush_atom = caf::atom_constant<caf::atom("flush")>;      ///< a partial batch waited long enough
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;    ///< sweep cancelled jobs from queues
using sweep_atom = caf::atom_constant<caf::atom("sweep")>;      ///< a waiting job's deadline is due

}  // namespace stagecraft::actors
