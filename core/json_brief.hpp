#pragma once
// A JSON value quoted in an error message about an untrusted file: scalars as JSON
// (long strings cut), lists and objects only by their size. Never recurses, so a
// value nested a million levels deep (which nlohmann parses iteratively but would
// dump recursively) cannot overflow the stack, and never grows past ~100 bytes.
//
//   SC_FAIL(Errc::parse, path << ": \"num_layers\" must be a number, got " << json_brief(v));
#include <string>

#include <nlohmann/json.hpp>

namespace stagecraft {

std::string json_brief(const nlohmann::json& v);

}  // namespace stagecraft
