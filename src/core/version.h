#pragma once

namespace fabrica {

// The release every binary reports (fabricad --version, fabrica --version, /api/v1/version).
inline constexpr const char* kVersion = "0.1.0";

}  // namespace fabrica
