// streamgen-client as a user runs it, against an in-process server with a held
// engine: Ctrl-C (SIGINT) cancels the call cleanly (exit 130) and the server
// frees the sequence; --deadline-ms ends a call with DEADLINE_EXCEEDED.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server_test_util.h"

namespace streamgen {
namespace {

using ::testing::HasSubstr;
using test::StartServer;
using test::TestOptions;
using test::WaitFor;

std::string ClientPath() { return std::string(STREAMGEN_BINARY_DIR) + "/client/streamgen-client"; }

// A child process with its stdout and stderr in pipes.
struct Child {
  pid_t pid = -1;
  int out = -1;
  int err = -1;
};

Child Spawn(const std::vector<std::string>& args) {
  int out[2], err[2];
  EXPECT_EQ(pipe(out), 0);
  EXPECT_EQ(pipe(err), 0);
  Child child;
  child.pid = fork();
  if (child.pid == 0) {
    dup2(out[1], 1);
    dup2(err[1], 2);
    close(out[0]);
    close(err[0]);
    std::vector<char*> argv;
    for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  child.out = out[0];
  child.err = err[0];
  return child;
}

std::string ReadAll(int fd) {
  std::string text;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) text.append(buffer, n);
  close(fd);
  return text;
}

int Wait(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(ClientCliTest, CtrlCCancelsTheCallAndTheServerFreesTheSequence) {
  if (access(ClientPath().c_str(), X_OK) != 0) GTEST_SKIP() << ClientPath() << " is not built";
  ServerOptions options = TestOptions();
  options.engine.start_paused = true;
  std::unique_ptr<StreamgenServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  Engine* engine = server->engine();
  Child child = Spawn({ClientPath(), "--server=127.0.0.1:" + std::to_string(server->port()),
                       "--json", "generate", "Once upon a time", "--max-new-tokens=200"});
  ASSERT_TRUE(WaitFor([&] { return engine->stats().waiting == 1; }));
  engine->Step(1);
  // The first message reaches the client's stdout (one JSON object per line).
  std::string first_line;
  char c;
  while (read(child.out, &c, 1) == 1 && c != '\n') first_line += c;
  nlohmann::json first = nlohmann::json::parse(first_line);
  EXPECT_TRUE(first.contains("tokens"));

  kill(child.pid, SIGINT);
  ASSERT_TRUE(WaitFor([&] { return server->metrics()->engine_cancels() == 1; }));
  engine->Step(1);
  ASSERT_TRUE(WaitFor([&] { return engine->stats().cancelled == 1; }));
  EXPECT_EQ(engine->stats().running, 0);
  ReadAll(child.out);
  std::string errors = ReadAll(child.err);
  EXPECT_EQ(Wait(child.pid), 130);
  EXPECT_THAT(errors, HasSubstr("cancelled"));
}

TEST(ClientCliTest, DeadlineEndsTheCall) {
  if (access(ClientPath().c_str(), X_OK) != 0) GTEST_SKIP() << ClientPath() << " is not built";
  ServerOptions options = TestOptions();
  options.engine.start_paused = true;  // held: the deadline always passes first
  std::unique_ptr<StreamgenServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  Child child = Spawn({ClientPath(), "--server=127.0.0.1:" + std::to_string(server->port()),
                       "--deadline-ms=200", "generate", "Once upon a time"});
  ReadAll(child.out);
  std::string errors = ReadAll(child.err);
  EXPECT_EQ(Wait(child.pid), 1);
  EXPECT_THAT(errors, HasSubstr("DEADLINE_EXCEEDED"));
  ASSERT_TRUE(WaitFor([&] { return server->metrics()->engine_cancels() == 1; }));
  server->engine()->Resume();
}

TEST(ClientCliTest, ApiKeyFlagAndEnvironment) {
  if (access(ClientPath().c_str(), X_OK) != 0) GTEST_SKIP() << ClientPath() << " is not built";
  ServerOptions options = TestOptions();
  options.frontend.api_keys = *ApiKeys::FromText("cli-key\n", "test");
  std::unique_ptr<StreamgenServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  std::string address = "--server=127.0.0.1:" + std::to_string(server->port());
  Child without = Spawn({ClientPath(), address, "info"});
  ReadAll(without.out);
  EXPECT_THAT(ReadAll(without.err), HasSubstr("UNAUTHENTICATED"));
  EXPECT_EQ(Wait(without.pid), 1);
  Child with = Spawn({ClientPath(), address, "--api-key=cli-key", "info"});
  EXPECT_THAT(ReadAll(with.out), HasSubstr("tiny-builtin"));
  ReadAll(with.err);
  EXPECT_EQ(Wait(with.pid), 0);
}

// `health` is the container's HEALTHCHECK: exit 0 and SERVING while serving,
// exit 1 and NOT_SERVING once draining, exit 1 with UNAVAILABLE when nothing
// listens.
TEST(ClientCliTest, HealthSubcommandFollowsTheServingStatus) {
  if (access(ClientPath().c_str(), X_OK) != 0) GTEST_SKIP() << ClientPath() << " is not built";
  std::unique_ptr<StreamgenServer> server = StartServer(TestOptions());
  ASSERT_NE(server, nullptr);
  std::string address = "--server=127.0.0.1:" + std::to_string(server->port());
  Child serving = Spawn({ClientPath(), address, "health"});
  EXPECT_EQ(ReadAll(serving.out), "SERVING\n");
  ReadAll(serving.err);
  EXPECT_EQ(Wait(serving.pid), 0);
  Child service = Spawn({ClientPath(), address, "health", "--service=streamgen.v1.TextGeneration"});
  EXPECT_EQ(ReadAll(service.out), "SERVING\n");
  ReadAll(service.err);
  EXPECT_EQ(Wait(service.pid), 0);
  Child unknown = Spawn({ClientPath(), address, "health", "--service=no.such.Service"});
  ReadAll(unknown.out);
  EXPECT_THAT(ReadAll(unknown.err), HasSubstr("NOT_FOUND"));
  EXPECT_EQ(Wait(unknown.pid), 1);

  server->BeginDrain();
  Child draining = Spawn({ClientPath(), address, "health"});
  EXPECT_EQ(ReadAll(draining.out), "NOT_SERVING\n");
  ReadAll(draining.err);
  EXPECT_EQ(Wait(draining.pid), 1);
  const int port = server->port();
  server.reset();

  Child gone = Spawn({ClientPath(), "--server=127.0.0.1:" + std::to_string(port),
                      "--deadline-ms=2000", "health"});
  ReadAll(gone.out);
  std::string errors = ReadAll(gone.err);
  EXPECT_THAT(errors, ::testing::AnyOf(HasSubstr("UNAVAILABLE"), HasSubstr("DEADLINE_EXCEEDED")));
  EXPECT_EQ(Wait(gone.pid), 1);
}

}  // namespace
}  // namespace streamgen
