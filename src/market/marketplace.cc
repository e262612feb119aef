#include "market/marketplace.h"

#include <boost/url/parse.hpp>

namespace fabrica::market {
namespace {

constexpr Permissions kPublic{0604};
constexpr Permissions kPrivate{0600};

std::string market_noun(int64_t id) { return "marketplace " + std::to_string(id); }

store::Record market_record(const Marketplace& m) {
  return store::Record{.type = std::string(kMarketplaceType),
                       .id = m.header.id,
                       .name = m.header.name,
                       .uid = m.header.uid,
                       .gid = m.header.gid,
                       .state = m.header.state,
                       .key = m.header.name,
                       .body = dump_json(m.to_api_json()),
                       .version = m.version};
}

Result<Marketplace> market_from_record(const store::Record& r) {
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(r.body));
  Marketplace m;
  FAB_ASSIGN_OR_RETURN(m.header, ObjectHeader::from_json(body));
  if (body.value("kind", "") != "huggingface" || !body.contains("url")) {
    return fail(ErrorCode::kInternal, "stored " + market_noun(r.id) + " is malformed");
  }
  m.url = body.value("url", "");
  m.description = body.value("description", "");
  m.version = r.version;
  return m;
}

Result<void> validate_url(const std::string& url) {
  auto bad = [](const std::string& why) {
    return fail(ErrorCode::kInvalidArgument, why + ": \"https://host[:port]\"", "url");
  };
  if (url.empty() || url.size() > 512) return bad("must be 1 to 512 characters");
  auto parsed = boost::urls::parse_absolute_uri(url);
  if (!parsed) return bad("is not a URL");
  if (parsed->scheme() != "http" && parsed->scheme() != "https") return bad("must be http(s)");
  if (parsed->encoded_host().empty()) return bad("has no host");
  if (parsed->has_userinfo()) return bad("must not carry credentials");
  if ((!parsed->encoded_path().empty() && parsed->encoded_path() != "/") || parsed->has_query() ||
      parsed->has_fragment()) {
    return bad("must have no path, query or fragment");
  }
  return {};
}

Result<void> validate_description(const std::string& d) {
  if (d.size() > 1024) {
    return fail(ErrorCode::kInvalidArgument, "must be at most 1024 characters", "description");
  }
  return {};
}

std::string trimmed(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

}  // namespace

std::string_view market_kind_name(MarketKind) { return "huggingface"; }

Json Marketplace::to_api_json() const {
  Json j = Json::object();
  header.to_json(j);
  j["state_name"] = enabled() ? "ENABLED" : "DISABLED";
  j["kind"] = market_kind_name(kind);
  j["url"] = url;
  j["description"] = description;
  j["public"] = is_public();
  return j;
}

Result<void> Marketplaces::bootstrap(const std::string& hub_url) {
  FAB_TRY(validate_url(hub_url));
  return store_.write([&](store::Transaction& tx) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(auto any, tx.list(kMarketplaceType, store::ListQuery{.limit = 1}));
    if (!any.empty()) return {};
    FAB_ASSIGN_OR_RETURN(int64_t id, tx.allocate_id(kMarketplaceType));
    int64_t now = unix_seconds(clock_.now());
    Marketplace m{.header = ObjectHeader::create(id, "huggingface", 0, 0, kPublic, 0, now),
                  .url = trimmed(hub_url),
                  .description = "The Hugging Face Hub (models imported as hf://ORG/NAME@REVISION)",
                  .version = 1};
    return tx.insert(market_record(m));
  });
}

Result<Marketplace> Marketplaces::create(const auth::Caller& caller,
                                         const NewMarketplace& request) {
  FAB_TRY(authorizer_.require_superuser(caller, "create marketplaces"));
  FAB_TRY(validate_name(request.name));
  FAB_TRY(validate_url(request.url));
  FAB_TRY(validate_description(request.description));
  return store_.write_value<Marketplace>([&](store::Transaction& tx) -> Result<Marketplace> {
    FAB_ASSIGN_OR_RETURN(
        auto same, tx.list(kMarketplaceType, store::ListQuery{.limit = 1, .name = request.name}));
    if (!same.empty()) {
      return fail(ErrorCode::kAlreadyExists, "a marketplace named " + request.name + " exists",
                  "name");
    }
    FAB_ASSIGN_OR_RETURN(int64_t id, tx.allocate_id(kMarketplaceType));
    int64_t now = unix_seconds(clock_.now());
    Marketplace m{.header = ObjectHeader::create(id, request.name, caller.uid, 0,
                                                 request.is_public ? kPublic : kPrivate, 0, now),
                  .kind = request.kind,
                  .url = trimmed(request.url),
                  .description = request.description,
                  .version = 1};
    FAB_TRY(tx.insert(market_record(m)));
    return m;
  });
}

Result<Marketplace> Marketplaces::get(const auth::Caller& caller, int64_t id) {
  return store_.read_value<Marketplace>([&](store::Transaction& tx) -> Result<Marketplace> {
    auto r = tx.get(kMarketplaceType, id);
    if (!r) return fail(r.error().code(), market_noun(id) + " not found");
    FAB_ASSIGN_OR_RETURN(Marketplace m, market_from_record(*r));
    FAB_TRY(authorizer_.require(caller, auth::object_ref(ObjectType::kMarketplace, m.header),
                                Right::kUse, market_noun(id)));
    return m;
  });
}

Result<auth::Page<Marketplace>> Marketplaces::list(const auth::Caller& caller,
                                                   const auth::ListOptions& options) {
  store::ListQuery query{.after_id = options.after_id, .name = options.name};
  return store_.read_value<auth::Page<Marketplace>>([&](store::Transaction& tx) {
    return auth::visible_page<Marketplace>(
        tx, kMarketplaceType, query, options.limit, market_from_record, [&](const Marketplace& m) {
          return authorizer_.allows(caller, auth::object_ref(ObjectType::kMarketplace, m.header),
                                    Right::kUse);
        });
  });
}

Result<Marketplace> Marketplaces::update(const auth::Caller& caller, int64_t id,
                                         const MarketplaceChange& change) {
  FAB_TRY(authorizer_.require_superuser(caller, "change marketplaces"));
  if (change.url) FAB_TRY(validate_url(*change.url));
  if (change.description) FAB_TRY(validate_description(*change.description));
  return store_.write_value<Marketplace>([&](store::Transaction& tx) -> Result<Marketplace> {
    auto r = tx.get(kMarketplaceType, id);
    if (!r) return fail(r.error().code(), market_noun(id) + " not found");
    FAB_ASSIGN_OR_RETURN(Marketplace m, market_from_record(*r));
    if (change.url) m.url = trimmed(*change.url);
    if (change.description) m.description = *change.description;
    if (change.enabled) m.header.state = *change.enabled ? 0 : 1;
    if (change.is_public) m.header.permissions = *change.is_public ? kPublic : kPrivate;
    m.header.updated_at = unix_seconds(clock_.now());
    FAB_ASSIGN_OR_RETURN(m.version, tx.update(market_record(m)));
    return m;
  });
}

Result<void> Marketplaces::remove(const auth::Caller& caller, int64_t id) {
  FAB_TRY(authorizer_.require_superuser(caller, "delete marketplaces"));
  return store_.write([&](store::Transaction& tx) -> Result<void> {
    auto r = tx.get(kMarketplaceType, id);
    if (!r) return fail(r.error().code(), market_noun(id) + " not found");
    return tx.remove(kMarketplaceType, id);
  });
}

Result<Marketplace> Marketplaces::pick(const auth::Caller& caller, std::optional<int64_t> id,
                                       MarketKind kind) {
  auto usable = [&](const Marketplace& m) {
    return authorizer_.allows(caller, auth::object_ref(ObjectType::kMarketplace, m.header),
                              Right::kUse);
  };
  return store_.read_value<Marketplace>([&](store::Transaction& tx) -> Result<Marketplace> {
    if (id) {
      auto r = tx.get(kMarketplaceType, *id);
      if (!r) return fail(ErrorCode::kNotFound, market_noun(*id) + " not found", "marketplace_id");
      FAB_ASSIGN_OR_RETURN(Marketplace m, market_from_record(*r));
      if (!usable(m)) {
        return fail(ErrorCode::kNotFound, market_noun(*id) + " not found", "marketplace_id");
      }
      if (!m.enabled()) {
        return fail(ErrorCode::kFailedPrecondition, market_noun(*id) + " is disabled",
                    "marketplace_id");
      }
      if (m.kind != kind) {
        return fail(
            ErrorCode::kInvalidArgument,
            market_noun(*id) + " is not a " + std::string(market_kind_name(kind)) + " marketplace",
            "marketplace_id");
      }
      return m;
    }
    std::optional<Marketplace> found;
    FAB_TRY(store::for_each(tx, kMarketplaceType, [&](const store::Record& r) -> Result<bool> {
      FAB_ASSIGN_OR_RETURN(Marketplace m, market_from_record(r));
      if (m.enabled() && m.kind == kind && usable(m)) {
        found = std::move(m);
        return false;
      }
      return true;
    }));
    if (!found) {
      return fail(ErrorCode::kFailedPrecondition,
                  "no enabled " + std::string(market_kind_name(kind)) +
                      " marketplace you may use: an administrator makes one public or adds it "
                      "to your VDC",
                  "marketplace_id");
    }
    return *found;
  });
}

}  // namespace fabrica::market
