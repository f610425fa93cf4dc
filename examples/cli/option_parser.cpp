// option_parser: CLI11 splits the command line, cli.hpp converts the values; see option_parser.hpp.
#include "cli/option_parser.hpp"

#include <deque>
#include <functional>

#include <CLI/CLI.hpp>

namespace dcli {

struct option_parser::impl {
  CLI::App app;
  std::deque<std::string> texts;  // raw values (stable addresses for CLI11)
  std::vector<std::pair<CLI::Option*, std::function<void()>>> converters;
  std::vector<std::string> required;

  impl(const std::string& program, const std::string& description) : app(description, program) {}

  // A one-value option bound to a fresh raw string, converted by `convert` after parsing.
  CLI::Option* add(const std::string& flag, const std::string& type, const std::string& help,
                   std::function<void(const std::string&)> convert) {
    texts.emplace_back();
    std::string& raw = texts.back();
    CLI::Option* o = app.add_option(flag, raw, help);
    o->type_name(type);
    converters.emplace_back(o, [&raw, convert = std::move(convert)] { convert(raw); });
    return o;
  }
};

option_parser::option_parser(const std::string& program, const std::string& description)
    : p_(std::make_unique<impl>(program, description)) {
  // Unknown arguments are collected (not thrown) so that the message can say which they are.
  p_->app.allow_extras();
}

option_parser::~option_parser() = default;

void option_parser::text(const std::string& flag, std::string& out, const std::string& type, const std::string& help,
                         bool allow_empty) {
  p_->add(flag, type, help, [&out, flag, allow_empty](const std::string& s) {
    if (s.empty() && !allow_empty) throw cli_error(flag + ": empty value");
    out = s;
  });
}

void option_parser::count(const std::string& flag, std::size_t& out, std::uint64_t lo, std::uint64_t hi,
                          const std::string& help) {
  p_->add(flag, "N", help,
          [&out, flag, lo, hi](const std::string& s) { out = static_cast<std::size_t>(to_count(flag, s, lo, hi)); });
}

void option_parser::u64(const std::string& flag, std::uint64_t& out, const std::string& help) {
  p_->add(flag, "N", help, [&out, flag](const std::string& s) { out = to_u64(flag, s); });
}

void option_parser::real(const std::string& flag, double& out, const real_range& range, const std::string& help) {
  p_->add(flag, "X", help, [&out, flag, range](const std::string& s) { out = to_real(flag, s, range); });
}

void option_parser::real_list(const std::string& flag, std::vector<double>& out, const real_range& range,
                              const std::string& help) {
  p_->add(flag, "LIST", help, [&out, flag, range](const std::string& s) { out = to_real_list(flag, s, range); });
}

void option_parser::count_list(const std::string& flag, std::vector<std::size_t>& out, std::uint64_t lo,
                               std::uint64_t hi, const std::string& help) {
  p_->add(flag, "LIST", help, [&out, flag, lo, hi](const std::string& s) {
    const auto v = to_count_list(flag, s, lo, hi);
    out.assign(v.begin(), v.end());
  });
}

void option_parser::choice(const std::string& flag, std::string& out, const std::vector<std::string>& allowed,
                           const std::string& help) {
  p_->add(flag, "NAME", help, [&out, flag, allowed](const std::string& s) { out = to_choice(flag, s, allowed); });
}

void option_parser::choice_list(const std::string& flag, std::vector<std::string>& out,
                                const std::vector<std::string>& allowed, const std::string& help) {
  p_->add(flag, "LIST", help,
          [&out, flag, allowed](const std::string& s) { out = to_choice_list(flag, s, allowed); });
}

void option_parser::flag(const std::string& flag, bool& out, bool value, const std::string& help) {
  CLI::Option* o = p_->app.add_flag(flag, help);
  // "--flag=value" is not accepted: a flag takes no value.
  o->disable_flag_override();
  p_->converters.emplace_back(o, [&out, value] { out = value; });
}

void option_parser::positional(const std::string& name, std::string& out, const std::string& help, bool required) {
  CLI::Option* o = p_->add(name, "", help, [&out, name](const std::string& s) {
    if (s.empty()) throw cli_error(name + ": empty value");
    out = s;
  });
  if (required) {
    o->required();  // shown in the help; the check itself is parse()'s
    p_->required.push_back(name);
  }
}

void option_parser::required(const std::string& flag) {
  if (CLI::Option* o = p_->app.get_option_no_throw(flag)) o->required();
  p_->required.push_back(flag);
}

void option_parser::footer(const std::string& text) { p_->app.footer(text); }

bool option_parser::given(const std::string& flag) const {
  const CLI::Option* o = p_->app.get_option_no_throw(flag);
  return o && o->count() > 0;
}

namespace {
// "<name>: <rest>" -> name (CLI11 starts its option messages with the option's name).
std::string leading_name(const std::string& msg) {
  const auto k = msg.find(':');
  return k == std::string::npos ? std::string() : msg.substr(0, k);
}
}  // namespace

void option_parser::parse(int argc, const char* const* argv) {
  CLI::App& app = p_->app;
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    throw help_requested(app.help());
  } catch (const CLI::CallForAllHelp&) {
    throw help_requested(app.help("", CLI::AppFormatMode::All));
  } catch (const CLI::ArgumentMismatch& e) {
    const std::string msg = e.what(), name = leading_name(msg);
    if (!name.empty() && msg.find("required") != std::string::npos && msg.find("missing") != std::string::npos)
      throw cli_error(name + " needs a value");
    if (!name.empty() && msg.find("At Most") != std::string::npos) throw cli_error(name + ": given more than once");
    if (msg.find("flag override") != std::string::npos) {
      std::string flag = msg.substr(0, msg.find(' '));
      if (flag.empty() || flag[0] != '-') flag = "--" + flag;
      throw cli_error(flag + " takes no value");
    }
    throw cli_error(msg);
  } catch (const CLI::ParseError& e) {
    throw cli_error(e.what());
  }
  for (const std::string& extra : app.remaining()) {
    const bool looks_like_option = extra.size() > 1 && extra[0] == '-' && !(extra[1] >= '0' && extra[1] <= '9');
    throw cli_error(looks_like_option ? "unknown option '" + extra + "'" : "unexpected argument '" + extra + "'");
  }
  for (const std::string& r : p_->required)
    if (!given(r)) throw cli_error(r + " is required");
  for (auto& [opt, convert] : p_->converters)
    if (opt->count() > 0) convert();
}

}  // namespace dcli
