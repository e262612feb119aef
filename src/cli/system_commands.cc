#include "cli/cli.h"

namespace fabrica::cli {

void add_system_commands(CLI::App& app, Context& ctx) {
  auto* system = app.add_subcommand("system", "The control plane itself (administrators)");
  system->require_subcommand(1);
  system->add_subcommand("sealing-key", "Show the id of the key that seals stored secrets")
      ->callback([&ctx] {
        ctx.run([&]() -> Result<void> {
          FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
          FAB_ASSIGN_OR_RETURN(Json key, api.get("/api/v1/system/sealing-key"));
          print_object(ctx, key);
          return {};
        });
      });
  system
      ->add_subcommand("rotate-sealing-key",
                       "Seal every stored secret under a new key and forget the old key")
      ->callback([&ctx] {
        ctx.run([&]() -> Result<void> {
          FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
          FAB_ASSIGN_OR_RETURN(Json done,
                               api.post("/api/v1/system/sealing-key/rotate", Json::object()));
          print_object(ctx, done);
          return {};
        });
      });
}

}  // namespace fabrica::cli
