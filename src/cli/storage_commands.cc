// fabrica datastore ... and fabrica image ...: shared storage and the images on it, with a
// resumable, checksummed upload and a progress bar.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>

#include "cli/cli.h"
#include "crypto/crypto.h"

namespace fabrica::cli {
namespace {

using Clock = std::chrono::steady_clock;

// A one-line progress bar on stderr, redrawn at most 10 times a second (and only on a
// terminal, unless it is the last draw).
class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total)
      : label_(std::move(label)), total_(total), start_(Clock::now()), tty_(isatty(2)) {}
  void update(int64_t done, bool last = false) {
    auto now = Clock::now();
    if (!last && (!tty_ || now - drawn_ < std::chrono::milliseconds(100))) return;
    drawn_ = now;
    double seconds = std::chrono::duration<double>(now - start_).count();
    double fraction = total_ > 0 ? static_cast<double>(done) / static_cast<double>(total_) : 1;
    int filled = static_cast<int>(fraction * 30);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(30, ' ');
    std::fprintf(
        stderr, "\r%-10s [%s] %3d%% %s / %s  %s/s ", label_.c_str(), bar.c_str(),
        static_cast<int>(fraction * 100), human_bytes(done).c_str(), human_bytes(total_).c_str(),
        human_bytes(seconds > 0 ? static_cast<int64_t>(static_cast<double>(done) / seconds) : 0)
            .c_str());
    if (last) std::fprintf(stderr, "\n");
  }

 private:
  std::string label_;
  int64_t total_;
  Clock::time_point start_;
  Clock::time_point drawn_{};
  bool tty_;
};

Result<int64_t> file_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return fail(ErrorCode::kInvalidArgument, path + " is not a readable file", "file");
  }
  return static_cast<int64_t>(st.st_size);
}

Result<std::string> sha256_file(const std::string& path, int64_t size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(ErrorCode::kInvalidArgument, "cannot read " + path, "file");
  crypto::Sha256 hash;
  ProgressBar bar("checksum", size);
  std::vector<char> buffer(8 << 20);
  int64_t done = 0;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    auto n = in.gcount();
    if (n <= 0) break;
    hash.update(std::string_view(buffer.data(), static_cast<size_t>(n)));
    done += n;
    bar.update(done);
  }
  if (done != size) return fail(ErrorCode::kInvalidArgument, path + " changed while read", "file");
  bar.update(done, true);
  return hash.finish();
}

// Sends `path` to image `id` from the byte the server acknowledged last, 64 MiB per PUT,
// retrying a piece after a dropped connection. Returns the image once READY.
Result<Json> send_file(Context& ctx, int64_t id, const std::string& path) {
  constexpr int64_t kPiece = 64 << 20;
  FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
  std::string target = "/api/v1/images/" + std::to_string(id);
  FAB_ASSIGN_OR_RETURN(Json image, api.get(target));
  if (image["state_name"] != "LOCKED" || !image["progress"].is_object() ||
      !image["progress"].value("resumable", false)) {
    return fail(ErrorCode::kFailedPrecondition,
                "image " + std::to_string(id) + " is " + image["state_name"].get<std::string>() +
                    ", not waiting for an upload",
                "image");
  }
  int64_t total = image["progress"]["bytes_total"].get<int64_t>();
  int64_t done = image["progress"]["bytes_done"].get<int64_t>();
  FAB_ASSIGN_OR_RETURN(int64_t size, file_size(path));
  if (size != total) {
    return fail(ErrorCode::kInvalidArgument,
                path + " has " + std::to_string(size) + " bytes; image " + std::to_string(id) +
                    " expects " + std::to_string(total),
                "file");
  }
  std::ifstream in(path, std::ios::binary);
  ProgressBar bar("upload", total);
  std::string piece;
  int failures = 0;
  Json last;
  while (done < total) {
    int64_t n = std::min(kPiece, total - done);
    piece.resize(static_cast<size_t>(n));
    in.clear();
    in.seekg(done);
    if (!in.read(piece.data(), n)) {
      return fail(ErrorCode::kInvalidArgument, "cannot read " + path, "file");
    }
    std::string range = "bytes " + std::to_string(done) + "-" + std::to_string(done + n - 1) + "/" +
                        std::to_string(total);
    auto sent = api.send_bytes("PUT", target + "/upload", piece, {{"Content-Range", range}});
    if (!sent) {
      if (sent.error().code() != ErrorCode::kUnavailable || ++failures > 5) return sent;
      // The connection dropped: ask where the server's data ends and go on from there.
      std::this_thread::sleep_for(std::chrono::seconds(failures));
      FAB_ASSIGN_OR_RETURN(auto again, ctx.api());
      api = std::move(again);
      FAB_ASSIGN_OR_RETURN(image, api.get(target));
      if (!image["progress"].is_object()) break;
      done = image["progress"]["bytes_done"].get<int64_t>();
      continue;
    }
    failures = 0;
    last = std::move(*sent);
    done += n;
    bar.update(done, done == total);
  }
  if (last.is_null() || last["state_name"] == "LOCKED") {
    FAB_ASSIGN_OR_RETURN(last, api.get(target));
  }
  return last;
}

// Polls a LOCKED image (a copy or clone) with a progress bar until it settles.
Result<Json> wait_image(Context& ctx, int64_t id) {
  FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
  std::string target = "/api/v1/images/" + std::to_string(id);
  std::optional<ProgressBar> bar;
  while (true) {
    FAB_ASSIGN_OR_RETURN(Json image, api.get(target));
    if (image["state_name"] != "LOCKED") {
      if (bar && image["state_name"] == "READY") bar->update(image["size"].get<int64_t>(), true);
      return image;
    }
    if (image["progress"].is_object()) {
      int64_t total = image["progress"]["bytes_total"].get<int64_t>();
      if (!bar) bar.emplace("copy", total);
      bar->update(image["progress"]["bytes_done"].get<int64_t>());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

Result<Json> settled(const Json& image) {
  if (image["state_name"] == "ERROR") {
    return fail(ErrorCode::kFailedPrecondition,
                "image " + to_text(image["id"]) + " is in ERROR: " + to_text(image["error"]));
  }
  return image;
}

void print_image_id(const Context& ctx, const Json& image) {
  if (ctx.output == Output::kJson) {
    print_object(ctx, image);
  } else {
    std::cout << "ID: " << image["id"] << " (" << to_text(image["state_name"]) << ")" << std::endl;
  }
}

std::vector<Column> image_columns() {
  return {field("ID", "id"),
          field("NAME", "name"),
          field("OWNER", "uid"),
          field("GROUP", "gid"),
          field("DS", "datastore_id"),
          field("TYPE", "type"),
          field("FORMAT", "format"),
          {"SIZE", [](const Json& i) { return human_bytes(i.value("size", int64_t{0})); }},
          {"PERS",
           [](const Json& i) { return std::string(i.value("persistent", false) ? "yes" : "no"); }},
          field("STATE", "state_name"),
          field("VMS", "running_vms")};
}

// The flags of `image create` and `image upload` that describe the new image.
struct ImageFlags {
  std::string name;
  std::string datastore;
  std::string type;
  std::string format;
  std::string description;
  bool persistent = false;

  void add(CLI::App* cmd, bool name_required) {
    auto* n = cmd->add_option("--name", name, "Image name");
    if (name_required) n->required();
    cmd->add_option("-d,--datastore", datastore, "Datastore id or name (default 1, files: 2)");
    cmd->add_option("-t,--type", type, "OS, DATABLOCK, CDROM, KERNEL or RAMDISK (default OS)");
    cmd->add_option("--format", format, "qcow2 or raw (checked; detected when left out)");
    cmd->add_option("--description", description, "What it holds");
    cmd->add_flag("--persistent", persistent, "One VM at a time keeps its writes");
  }
  Result<Json> body(client::ApiClient& api) const;
};

}  // namespace

namespace {

Result<Json> ImageFlags::body(client::ApiClient& api) const {
  Json b{{"name", name}, {"persistent", persistent}};
  if (!datastore.empty()) {
    FAB_ASSIGN_OR_RETURN(b["datastore_id"], resolve_datastore(api, datastore));
  }
  if (!type.empty()) b["type"] = type;
  if (!format.empty()) b["format"] = format;
  if (!description.empty()) b["description"] = description;
  return b;
}

}  // namespace

void add_datastore_commands(CLI::App& app, Context& ctx) {
  auto* ds = app.add_subcommand("datastore", "Manage datastores (where images and VM disks live)");
  ds->require_subcommand(1);
  struct Flags {
    std::string name, kind = "image", driver = "shared", path, target;
    std::vector<std::string> clusters;
    int64_t limit_mb = -1;
  };
  auto f = std::make_shared<Flags>();
  auto* create = ds->add_subcommand("create", "Create a datastore (administrators)");
  create->add_option("name", f->name, "Datastore name")->required();
  create->add_option("--kind", f->kind, "image, system or files")
      ->check(CLI::IsMember({"image", "system", "files"}));
  create
      ->add_option("--driver", f->driver,
                   "shared (mounted on every host; qcow2 overlays) or local (copied to hosts)")
      ->check(CLI::IsMember({"shared", "local"}));
  create->add_option("--path", f->path, "Mount point, the same on fabricad and every host");
  create->add_option("--cluster", f->clusters,
                     "Cluster whose hosts see it, id or name (repeatable; default 0)");
  create->add_option("--limit-mb", f->limit_mb, "Most its images may hold");
  create->callback([&ctx, f] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      Json body{{"name", f->name}, {"kind", f->kind}, {"driver", f->driver}};
      if (!f->path.empty()) body["path"] = f->path;
      if (!f->clusters.empty()) {
        FAB_ASSIGN_OR_RETURN(body["clusters"], resolve_clusters(api, f->clusters));
      }
      if (f->limit_mb >= 0) body["limit_mb"] = f->limit_mb;
      FAB_ASSIGN_OR_RETURN(Json d, api.post("/api/v1/datastores", body));
      if (ctx.output == Output::kJson) {
        print_object(ctx, d);
      } else {
        std::cout << "ID: " << d["id"] << " at " << to_text(d["path"]) << std::endl;
      }
      return {};
    });
  });
  ds->add_subcommand("list", "List datastores with their capacity")->callback([&ctx] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json page, api.get("/api/v1/datastores"));
      auto mb = [](const char* key) {
        return [key](const Json& d) {
          if (!d["capacity"].is_object()) return std::string("-");
          return human_bytes(d["capacity"][key].get<int64_t>() * 1048576);
        };
      };
      print_list(
          ctx, page["items"],
          {field("ID", "id"), field("NAME", "name"), field("KIND", "kind"),
           field("DRIVER", "driver"), field("CLUSTERS", "clusters"), field("IMAGES", "images"),
           Column{"TOTAL", mb("total_mb")}, Column{"FREE", mb("free_mb")}, field("PATH", "path")});
      return {};
    });
  });
  auto* show = ds->add_subcommand("show", "Show a datastore");
  show->add_option("datastore", f->target, "Datastore id or name")->required();
  show->callback([&ctx, f] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_datastore(api, f->target));
      FAB_ASSIGN_OR_RETURN(Json d, api.get("/api/v1/datastores/" + std::to_string(id)));
      print_object(ctx, d);
      return {};
    });
  });
  auto* del = ds->add_subcommand("delete", "Delete a datastore that holds no images");
  del->add_option("datastore", f->target, "Datastore id or name")->required();
  del->callback([&ctx, f] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_datastore(api, f->target));
      FAB_TRY(api.del("/api/v1/datastores/" + std::to_string(id)));
      std::cout << "Datastore " << id << " deleted" << std::endl;
      return {};
    });
  });
}

void add_image_commands(CLI::App& app, Context& ctx) {
  auto* image = app.add_subcommand("image", "Manage images (VM disks, kernels, ISOs)");
  image->require_subcommand(1);
  auto flags = std::make_shared<ImageFlags>();
  auto file = std::make_shared<std::string>();
  auto size = std::make_shared<std::string>();
  auto target = std::make_shared<std::string>();
  auto resume = std::make_shared<int64_t>(-1);
  auto wait = std::make_shared<bool>(false);

  auto* upload = image->add_subcommand(
      "upload", "Upload a file as a new image (resumable: --resume ID goes on after a break)");
  upload->add_option("file", *file, "The disk (qcow2 or raw), ISO, kernel or initrd")->required();
  flags->add(upload, false);
  upload->add_option("--resume", *resume, "Continue the upload of this LOCKED image");
  upload->callback([&ctx, flags, file, resume] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      int64_t id = *resume;
      if (id < 0) {
        if (flags->name.empty()) {
          return fail(ErrorCode::kInvalidArgument, "is required for a new image", "--name");
        }
        FAB_ASSIGN_OR_RETURN(int64_t bytes, file_size(*file));
        FAB_ASSIGN_OR_RETURN(std::string sha, sha256_file(*file, bytes));
        FAB_ASSIGN_OR_RETURN(Json body, flags->body(api));
        body["upload"] = Json{{"size", bytes}, {"sha256", sha}};
        FAB_ASSIGN_OR_RETURN(Json created, api.post("/api/v1/images", body));
        id = created["id"].get<int64_t>();
        if (ctx.output == Output::kTable) {
          std::cerr << "Image " << id
                    << " created; if the upload breaks, run: fabrica image upload " << *file
                    << " --resume " << id << std::endl;
        }
      }
      FAB_ASSIGN_OR_RETURN(Json done, send_file(ctx, id, *file));
      FAB_ASSIGN_OR_RETURN(done, settled(done));
      print_image_id(ctx, done);
      return {};
    });
  });

  auto* create = image->add_subcommand(
      "create", "Create an image from a file on fabricad's machine (--path) or empty (--size)");
  create->add_option("name", flags->name, "Image name")->required();
  flags->add(create, false);
  create->remove_option(create->get_option("--name"));
  create->add_option("--path", *file, "File on fabricad's machine to copy (administrators)");
  create->add_option("--size", *size, "An empty DATABLOCK of this size (10G, 512M)");
  create->add_flag("--wait", *wait, "Wait for the copy, with progress");
  create->callback([&ctx, flags, file, size, wait] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json body, flags->body(api));
      if (file->empty() == size->empty()) {
        return fail(ErrorCode::kInvalidArgument, "give --path or --size (or use image upload)",
                    "--path");
      }
      if (!file->empty()) body["path"] = *file;
      if (!size->empty()) {
        FAB_ASSIGN_OR_RETURN(body["blank_mb"], parse_megabytes(*size, "--size"));
        if (!body.contains("type")) body["type"] = "DATABLOCK";
      }
      FAB_ASSIGN_OR_RETURN(Json created, api.post("/api/v1/images", body));
      if (*wait) {
        FAB_ASSIGN_OR_RETURN(created, wait_image(ctx, created["id"].get<int64_t>()));
        FAB_ASSIGN_OR_RETURN(created, settled(created));
      }
      print_image_id(ctx, created);
      return {};
    });
  });

  image->add_subcommand("list", "List the images you may use")->callback([&ctx] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json items, list_all(api, "/api/v1/images?limit=1000"));
      print_list(ctx, items, image_columns());
      return {};
    });
  });
  auto* show = image->add_subcommand("show", "Show an image");
  show->add_option("image", *target, "Image id or name")->required();
  show->callback([&ctx, target] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "images", *target));
      FAB_ASSIGN_OR_RETURN(Json i, api.get("/api/v1/images/" + std::to_string(id)));
      print_object(ctx, i);
      return {};
    });
  });
  auto* del = image->add_subcommand("delete", "Delete an image no VM uses (and its data)");
  del->add_option("image", *target, "Image id or name")->required();
  del->callback([&ctx, target] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "images", *target));
      FAB_TRY(api.del("/api/v1/images/" + std::to_string(id)));
      std::cout << "Image " << id << " deleted" << std::endl;
      return {};
    });
  });
  auto clone_name = std::make_shared<std::string>();
  auto clone_ds = std::make_shared<std::string>();
  auto* clone = image->add_subcommand("clone", "Copy an image into a new one");
  clone->add_option("image", *target, "Image id or name")->required();
  clone->add_option("name", *clone_name, "The copy's name")->required();
  clone->add_option("-d,--datastore", *clone_ds, "Datastore for the copy (default: the same)");
  clone->add_flag("--wait", *wait, "Wait for the copy, with progress");
  clone->callback([&ctx, target, clone_name, clone_ds, wait] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "images", *target));
      Json body{{"name", *clone_name}};
      if (!clone_ds->empty()) {
        FAB_ASSIGN_OR_RETURN(body["datastore_id"], resolve_datastore(api, *clone_ds));
      }
      FAB_ASSIGN_OR_RETURN(Json copy,
                           api.post("/api/v1/images/" + std::to_string(id) + "/clone", body));
      if (*wait) {
        FAB_ASSIGN_OR_RETURN(copy, wait_image(ctx, copy["id"].get<int64_t>()));
        FAB_ASSIGN_OR_RETURN(copy, settled(copy));
      }
      print_image_id(ctx, copy);
      return {};
    });
  });
  auto mode = std::make_shared<std::string>();
  auto* chmod = image->add_subcommand("chmod", "Set an image's permissions (640: group may use)");
  chmod->add_option("image", *target, "Image id or name")->required();
  chmod->add_option("permissions", *mode, "Octal UMA digits for owner, group, other")->required();
  chmod->callback([&ctx, target, mode] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "images", *target));
      FAB_ASSIGN_OR_RETURN(Json i, api.post("/api/v1/images/" + std::to_string(id) + "/chmod",
                                            Json{{"permissions", *mode}}));
      print_image_id(ctx, i);
      return {};
    });
  });
  struct Toggle {
    const char* name;
    const char* help;
    const char* path;
    Json body;
  };
  for (const auto& t :
       {Toggle{"persistent", "Make an image persistent (one VM keeps its writes)", "persistent",
               Json{{"persistent", true}}},
        Toggle{"nonpersistent", "Make an image non-persistent (each VM gets an overlay)",
               "persistent", Json{{"persistent", false}}},
        Toggle{"enable", "Enable a disabled image", "enable", Json::object()},
        Toggle{"disable", "Keep new VMs from using an image", "disable", Json::object()}}) {
    auto* cmd = image->add_subcommand(t.name, t.help);
    cmd->add_option("image", *target, "Image id or name")->required();
    cmd->callback([&ctx, target, path = std::string(t.path), body = t.body] {
      ctx.run([&]() -> Result<void> {
        FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
        FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "images", *target));
        FAB_ASSIGN_OR_RETURN(Json i,
                             api.post("/api/v1/images/" + std::to_string(id) + "/" + path, body));
        if (ctx.output == Output::kJson) {
          print_object(ctx, i);
        } else {
          std::cout << "Image " << id << ": " << to_text(i["state_name"])
                    << (i["persistent"].get<bool>() ? ", persistent" : ", non-persistent")
                    << std::endl;
        }
        return {};
      });
    });
  }
}

}  // namespace fabrica::cli
