#include "agent/hypervisor/context.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/process.h"

namespace fabrica::hypervisor {
namespace {

namespace fs = std::filesystem;

const Json kVariables = {{"HOSTNAME", "trainer"},
                         {"HF_MODEL_ID", "meta-llama/Llama-3.1-8B-Instruct"},
                         {"VLLM_PORT", 8000},
                         {"TRICKY", "it's $HOME `id` \"x\"\nsecond line \\ end"},
                         {"SSH_PUBLIC_KEY", "ssh-ed25519 AAAAC3Nz user@laptop"}};

TEST(ContextTest, AssignmentsAreShellQuotedAndReadBackExactly) {
  auto sh = render_context_sh(kVariables);
  ASSERT_TRUE(sh) << sh.error().message();
  EXPECT_NE(sh->find("VLLM_PORT='8000'\n"), std::string::npos) << *sh;
  EXPECT_NE(sh->find("TRICKY='it'\\''s $HOME"), std::string::npos) << *sh;
  fs::path file = fs::temp_directory_path() / "fabrica-context-test.sh";
  std::ofstream(file) << *sh;
  // A shell sourcing it gets every value back byte for byte, and runs nothing.
  auto value = run_process({"sh", "-c", ". " + file.string() + "; printf %s \"$TRICKY\""});
  ASSERT_TRUE(value) << value.error().message();
  EXPECT_EQ(*value, kVariables["TRICKY"].get<std::string>());
  fs::remove(file);
}

TEST(ContextTest, BadVariablesNameTheirField) {
  auto bad_name = render_context_sh(Json{{"1BAD", "x"}});
  ASSERT_FALSE(bad_name);
  EXPECT_EQ(bad_name.error().field(), "context.1BAD");
  auto injection = render_context_sh(Json{{"A;rm -rf /", "x"}});
  EXPECT_FALSE(injection);
  auto nested = render_context_sh(Json{{"LIST", Json::array({1, 2})}});
  ASSERT_FALSE(nested);
  EXPECT_EQ(nested.error().field(), "context.LIST");
  EXPECT_FALSE(render_context_sh(Json{{"NUL", std::string("a\0b", 3)}}));
  EXPECT_FALSE(render_context_sh(Json::array()));
}

TEST(ContextTest, TheIsoIsLabelledContextAndHoldsContextSh) {
  fs::path dir = fs::temp_directory_path() / "fabrica-context-iso";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string iso = (dir / "context.iso").string();
  auto sh = render_context_sh(kVariables);
  ASSERT_TRUE(build_context_iso(dir.string(), iso, *sh));
  ASSERT_TRUE(build_context_iso(dir.string(), iso, *sh));  // Rebuilt in place.
  struct stat st {};
  ASSERT_EQ(::stat(iso.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_FALSE(fs::exists(dir / "context"));  // No second copy of the secrets.
  auto info = run_process({"xorriso", "-indev", iso, "-pvd_info"});
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_NE(info->find("Volume Id    : CONTEXT"), std::string::npos) << *info;
  fs::path out = dir / "extracted.sh";
  ASSERT_TRUE(run_process(
      {"xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/context.sh", out.string()}));
  std::ifstream in(out);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), *sh);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fabrica::hypervisor
