// The cuemu check driver: runs the checks of the groups named on the command line (all by
// default), prints one line per failed check (every check with -v) and a summary, and exits
// non-zero if any check failed. `--expect-failure NAME` runs a scenario that must abort.
// The `random` group (not among the defaults) draws `--count N` cases (300) from `--seed S` (1);
// `--only I` runs case I alone (what a failure's replay line says).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "harness.h"

int main(int argc, char** argv) {
  bool verbose = false;
  std::vector<std::string> groups;
  unsigned long long seed = 1;
  long long count = 300, only = -1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "-v") == 0) {
      verbose = true;
    } else if ((std::strcmp(argv[i], "--seed") == 0 || std::strcmp(argv[i], "--count") == 0 ||
                std::strcmp(argv[i], "--only") == 0) && i + 1 < argc) {
      char* end = nullptr;
      const char* option = argv[i];
      const char* value = argv[++i];
      if (std::strcmp(option, "--seed") == 0) {
        seed = std::strtoull(value, &end, 10);
      } else {
        (std::strcmp(option, "--count") == 0 ? count : only) = std::strtoll(value, &end, 10);
      }
      if (end == value || *end != '\0' || *value == '-') {
        std::fprintf(stderr, "%s needs a non-negative integer, got %s\n", option, value);
        return 2;
      }
    } else if (std::strcmp(argv[i], "--expect-failure") == 0 && i + 1 < argc) {
      if (!harness::run_expected_failure(argv[i + 1])) {
        std::fprintf(stderr, "unknown scenario %s\n", argv[i + 1]);
        return 2;
      }
      return 0;
    } else {
      groups.push_back(argv[i]);
    }
  }
  if (groups.empty()) groups = {"cuemu", "compose", "conv", "chain", "worklist", "ck_worklist", "int64"};
  harness::Ledger ledger(verbose);
  for (const std::string& g : groups) {
    const int before = ledger.checks();
    if (g == "cuemu") {
      harness::check_cuemu(ledger);
    } else if (g == "compose") {
      harness::check_compose(ledger);
    } else if (g == "conv") {
      harness::check_conv(ledger);
    } else if (g == "chain") {
      harness::check_chain(ledger);
    } else if (g == "worklist") {
      harness::check_worklist(ledger);
    } else if (g == "ck_worklist") {
      harness::check_ck_worklist(ledger);
    } else if (g == "int64") {
      harness::check_int64(ledger);
    } else if (g == "random") {
      harness::check_random(ledger, seed, count, only);
    } else {
      std::fprintf(stderr, "unknown group %s (cuemu, compose, conv, chain, worklist, ck_worklist, int64, random)\n",
                   g.c_str());
      return 2;
    }
    std::printf("group %s: %d checks\n", g.c_str(), ledger.checks() - before);
  }
  const cuemu::LaunchStats s = cuemu::stats();
  std::printf("cuemu driver: %d checks, %d failed; %llu launches (%llu rejected), %llu blocks run (%llu skipped), "
              "%llu threads, %llu fiber switches\n",
              ledger.checks(), ledger.failures(), (unsigned long long)s.launches, (unsigned long long)s.rejected,
              (unsigned long long)s.blocks_run, (unsigned long long)s.blocks_skipped, (unsigned long long)s.threads_run,
              (unsigned long long)s.switches);
  return ledger.failures() == 0 ? 0 : 1;
}
