#include "gateway/metrics.h"

#include <cstdio>

namespace fabrica::gateway {
namespace {

std::string labels(const std::tuple<std::string, std::string>& s) {
  return "tenant=\"" + std::get<0>(s) + "\",endpoint=\"" + std::get<1>(s) + "\"";
}

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void render_histogram(std::string& out, const char* name, const std::string& l,
                      const Histogram& h) {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < Histogram::kBuckets.size(); ++i) {
    cumulative += h.counts[i];
    out += std::string(name) + "_bucket{" + l + ",le=\"" + number(Histogram::kBuckets[i]) + "\"} " +
           std::to_string(cumulative) + "\n";
  }
  out += std::string(name) + "_bucket{" + l + ",le=\"+Inf\"} " + std::to_string(h.count) + "\n";
  out += std::string(name) + "_sum{" + l + "} " + number(h.sum) + "\n";
  out += std::string(name) + "_count{" + l + "} " + std::to_string(h.count) + "\n";
}

}  // namespace

void Histogram::observe(double seconds) {
  ++count;
  sum += seconds;
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) {
      ++counts[i];
      return;
    }
  }
}

void Metrics::request(std::string_view tenant, std::string_view endpoint, int status,
                      double latency_seconds, std::optional<double> ttft_seconds,
                      int64_t input_tokens, int64_t output_tokens) {
  std::string klass = std::to_string(status / 100) + "xx";
  std::lock_guard lock(mutex_);
  PerEndpoint& p = series_[Series{std::string(tenant), std::string(endpoint)}];
  ++p.requests[klass];
  p.input_tokens += static_cast<uint64_t>(input_tokens);
  p.output_tokens += static_cast<uint64_t>(output_tokens);
  p.latency.observe(latency_seconds);
  if (ttft_seconds) p.ttft.observe(*ttft_seconds);
}

void Metrics::upstream_error(std::string_view tenant, std::string_view endpoint,
                             std::string_view reason) {
  std::lock_guard lock(mutex_);
  ++series_[Series{std::string(tenant), std::string(endpoint)}]
        .upstream_errors[std::string(reason)];
}

std::string Metrics::render(std::string_view extra) const {
  std::string out;
  std::lock_guard lock(mutex_);
  out += "# HELP fabrica_gateway_requests_total Requests answered, by status class.\n";
  out += "# TYPE fabrica_gateway_requests_total counter\n";
  for (const auto& [s, p] : series_) {
    for (const auto& [klass, n] : p.requests) {
      out += "fabrica_gateway_requests_total{" + labels(s) + ",status=\"" + klass + "\"} " +
             std::to_string(n) + "\n";
    }
  }
  out += "# HELP fabrica_gateway_tokens_total Tokens metered, by direction.\n";
  out += "# TYPE fabrica_gateway_tokens_total counter\n";
  for (const auto& [s, p] : series_) {
    out += "fabrica_gateway_tokens_total{" + labels(s) + ",direction=\"input\"} " +
           std::to_string(p.input_tokens) + "\n";
    out += "fabrica_gateway_tokens_total{" + labels(s) + ",direction=\"output\"} " +
           std::to_string(p.output_tokens) + "\n";
  }
  out += "# HELP fabrica_gateway_request_duration_seconds Arrival to last byte.\n";
  out += "# TYPE fabrica_gateway_request_duration_seconds histogram\n";
  for (const auto& [s, p] : series_) {
    render_histogram(out, "fabrica_gateway_request_duration_seconds", labels(s), p.latency);
  }
  out +=
      "# HELP fabrica_gateway_time_to_first_token_seconds Arrival to the first streamed "
      "byte.\n";
  out += "# TYPE fabrica_gateway_time_to_first_token_seconds histogram\n";
  for (const auto& [s, p] : series_) {
    if (p.ttft.count) {
      render_histogram(out, "fabrica_gateway_time_to_first_token_seconds", labels(s), p.ttft);
    }
  }
  out += "# HELP fabrica_gateway_upstream_errors_total Failed tries against backends.\n";
  out += "# TYPE fabrica_gateway_upstream_errors_total counter\n";
  for (const auto& [s, p] : series_) {
    for (const auto& [reason, n] : p.upstream_errors) {
      out += "fabrica_gateway_upstream_errors_total{" + labels(s) + ",reason=\"" + reason + "\"} " +
             std::to_string(n) + "\n";
    }
  }
  out += "# HELP fabrica_gateway_streams Streams open now.\n";
  out += "# TYPE fabrica_gateway_streams gauge\n";
  out += "fabrica_gateway_streams " + std::to_string(streams()) + "\n";
  out += extra;
  return out;
}

}  // namespace fabrica::gateway
