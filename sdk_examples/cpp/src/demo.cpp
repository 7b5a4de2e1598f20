// npc_voice_demo: what a game's NPC does, without a game engine.
//
// - An "LLM" thread sends a reply as tokens every 20-50 ms.
// - An "audio thread" pulls 10 ms blocks from the ring buffer in real time, as a
//   game's mixer would, and counts underruns (the buffer ran dry mid-turn).
// - Turn 1 is interrupted (barge-in) once 1 s of it has arrived; turn 2 is spoken
//   to the end. The last line printed is a RESULT line the tests parse.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "npc_voice/conversation.h"

using Clock = std::chrono::steady_clock;
using npc_voice::Conversation;
using npc_voice::RingBuffer;

namespace {

double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// Splits like an LLM tokenizer: words with their leading space, punctuation apart.
std::vector<std::string> Tokens(const std::string& text) {
  std::vector<std::string> out;
  std::string word;
  auto flush_word = [&] {
    if (word.empty()) return;
    size_t end = word.size();
    while (end > 0 && std::strchr(",.!?", word[end - 1])) --end;
    if (end > 0) out.push_back(word.substr(0, end));
    for (size_t i = end; i < word.size(); ++i) out.push_back(std::string(1, word[i]));
    word.clear();
  };
  for (char c : text) {
    if (c == ' ') {
      flush_word();
      word = " ";
    } else {
      word += c;
    }
  }
  flush_word();
  return out;
}

struct Player {
  // The game's audio thread: real-time playback of 10 ms blocks.
  RingBuffer* ring;
  int rate;
  std::atomic<bool> active{false};  // a turn is speaking: an empty buffer now is an underrun
  std::atomic<bool> clear{false};   // barge-in: drop what is queued (done on this thread)
  std::atomic<bool> stop{false};
  std::atomic<int> underruns{0};
  std::atomic<uint64_t> played{0};

  void Run() {
    const size_t block = rate / 100;
    std::vector<float> buf(block);
    bool was_short = false;
    auto next = Clock::now();
    while (!stop) {
      next += std::chrono::milliseconds(10);
      std::this_thread::sleep_until(next);
      if (clear.exchange(false)) ring->Clear();
      const size_t got = ring->Read(buf.data(), block);
      played += got;
      const bool short_block = active && got < block;
      if (short_block && !was_short) ++underruns;  // count each dry spell once
      was_short = short_block;
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::string server = "127.0.0.1:50051", voice = "guard", ca, server_name, api_key;
  int rate = 48000;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--server") server = argv[i + 1];
    else if (flag == "--voice") voice = argv[i + 1];
    else if (flag == "--rate") rate = std::atoi(argv[i + 1]);
    else if (flag == "--ca") ca = argv[i + 1];
    else if (flag == "--server-name") server_name = argv[i + 1];
    else if (flag == "--api-key") api_key = argv[i + 1];
  }
  RingBuffer ring(static_cast<size_t>(rate) * 30);  // 30 s: generation runs ahead of playback
  Player player{&ring, rate};

  std::mutex m;
  Clock::time_point cut_at{}, cancel_sent{};
  double ttfa_ms = -1, cancel_ms = -1;
  std::atomic<uint64_t> turn1_samples{0};
  int words = 0;

  npc_voice::Callbacks cb;
  cb.on_first_audio = [&](const std::string& turn) {
    std::lock_guard<std::mutex> lock(m);
    if (turn == "t1") ttfa_ms = MsSince(cut_at);
    player.active = true;
  };
  cb.on_mark = [&](const npc_voice::pb::TimingMark& mark) {
    if (mark.kind() == npc_voice::pb::WORD) ++words;  // a game maps these to visemes
  };
  cb.on_cancel_done = [&](const std::string&) {
    std::lock_guard<std::mutex> lock(m);
    cancel_ms = MsSince(cancel_sent);
  };

  npc_voice::SessionOptions options;
  options.voice_id = voice;
  options.sample_rate_hz = rate;
  auto channel = npc_voice::MakeChannel(server, ca, server_name, api_key);
  grpc::Status status = npc_voice::WarmVoice(channel, voice);  // level load
  Conversation conv(channel, options, &ring, cb);
  if (status.ok()) status = conv.Start();
  if (!status.ok()) {
    std::printf("RESULT status=%d message=\"%s\"\n", status.error_code(), status.error_message().c_str());
    return 1;
  }
  std::thread audio_thread([&] { player.Run(); });
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> pace(20, 50);

  auto speak = [&](const std::string& text, const std::string& turn, bool mark_cut) {
    auto tokens = Tokens(text);
    bool cut_marked = false;
    for (size_t i = 0; i < tokens.size(); ++i) {
      conv.SendText(tokens[i], turn);
      // The token after the first sentence's final punctuation lets the server cut it.
      if (mark_cut && !cut_marked && i > 0 && std::strchr(".!?", tokens[i - 1][0])) {
        std::lock_guard<std::mutex> lock(m);
        cut_at = Clock::now();
        cut_marked = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(pace(rng)));
    }
    if (mark_cut && !cut_marked) {
      std::lock_guard<std::mutex> lock(m);
      cut_at = Clock::now();
    }
    conv.Flush(turn);
  };

  // Turn 1, interrupted once a second of it has arrived.
  const auto start = Clock::now();
  std::thread llm([&] {
    speak("Halt! The gate is closed after dark, and the captain gave strict orders that nobody passes "
          "until the morning bell, not even merchants with papers.", "t1", true);
  });
  while (conv.samples_received() < static_cast<uint64_t>(rate) && MsSince(start) < 30000) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  {
    std::lock_guard<std::mutex> lock(m);
    cancel_sent = Clock::now();
  }
  turn1_samples = conv.samples_received();
  player.active = false;
  conv.Cancel("t1");    // from here the reader drops audio of t1 still in flight...
  player.clear = true;  // ...so clearing now leaves nothing of it to play (a game would fade)
  const bool cancel_acked = conv.WaitCancelDone("t1", 10000);
  llm.join();

  // Turn 2, spoken to the end.
  speak("Fine. Show me your papers.", "t2", false);
  const bool flushed = conv.WaitFlushDone("t2", 60000);
  player.active = false;  // all of the turn has arrived: running dry now is just its end
  while (ring.Available() > 0 && MsSince(start) < 90000) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  status = conv.Close();
  player.stop = true;
  audio_thread.join();

  std::printf("RESULT status=%d ttfa_ms=%.1f cancel_ms=%.1f cancel_acked=%d turn2_flushed=%d "
              "turn1_samples=%llu samples=%llu played=%llu dropped=%llu underruns=%d words=%d\n",
              status.error_code(), ttfa_ms, cancel_ms, cancel_acked ? 1 : 0, flushed ? 1 : 0,
              static_cast<unsigned long long>(turn1_samples.load()),
              static_cast<unsigned long long>(conv.samples_received()),
              static_cast<unsigned long long>(player.played.load()),
              static_cast<unsigned long long>(conv.samples_dropped()), player.underruns.load(), words);
  return status.ok() && cancel_acked && flushed ? 0 : 1;
}
