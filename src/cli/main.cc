// fabrica: the command-line client.
#include "cli/cli.h"
#include "core/version.h"

int main(int argc, char** argv) {
  using namespace fabrica::cli;
  Context ctx;
  ctx.config = load_config();
  CLI::App app{"fabrica: command-line client for the Fabrica AI Factory control plane"};
  app.require_subcommand(1);
  app.fallthrough();  // Global flags (-o json, --endpoint) work after the subcommand too.
  app.set_version_flag("--version", std::string("fabrica ") + fabrica::kVersion,
                       "Show this client's version (`fabrica version` adds the server's)");
  std::string output = "table";
  app.add_option("-o,--output", output, "table or json")->check(CLI::IsMember({"table", "json"}));
  app.add_option("--endpoint", ctx.endpoint_flag, "Server URL (else FABRICA_ENDPOINT or config)");
  app.add_option("--ca-file", ctx.ca_file_flag,
                 "CA certificates (PEM) to verify an https server with (else FABRICA_CA_FILE, "
                 "the config file, or the system's); fabrica login saves it");
  app.parse_complete_callback(
      [&] { ctx.output = output == "json" ? Output::kJson : Output::kTable; });
  add_session_commands(app, ctx);
  add_user_commands(app, ctx);
  add_group_commands(app, ctx);
  add_acl_commands(app, ctx);
  add_permission_commands(app, ctx);
  add_host_commands(app, ctx);
  add_cluster_commands(app, ctx);
  add_template_commands(app, ctx);
  add_vm_commands(app, ctx);
  add_datastore_commands(app, ctx);
  add_image_commands(app, ctx);
  add_vnet_commands(app, ctx);
  add_model_commands(app, ctx);
  add_app_commands(app, ctx);
  add_vdc_commands(app, ctx);
  add_quota_commands(app, ctx);
  add_apikey_commands(app, ctx);
  add_usage_commands(app, ctx);
  add_endpoint_commands(app, ctx);
  add_audit_commands(app, ctx);
  add_system_commands(app, ctx);
  CLI11_PARSE(app, argc, argv);
  return ctx.exit_code;
}
