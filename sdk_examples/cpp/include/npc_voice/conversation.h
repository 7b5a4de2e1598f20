// A streaming conversation with the NPC voice service: the engine-independent core
// of a game integration (the Unreal component wraps this; see sdk_examples/unreal).
//
// Text goes in from any thread as the LLM writes it. A reader thread receives
// audio, decodes PCM16 into the ring buffer the game's audio thread plays from,
// and reports marks and acknowledgements through callbacks.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "npc_voice/ring_buffer.h"
#include "npcvoice/v1/npc_voice.grpc.pb.h"

namespace npc_voice {

namespace pb = ::npcvoice::v1;

struct SessionOptions {
  std::string voice_id = "guard";
  uint32_t sample_rate_hz = 48000;  // Unity and Unreal mix at 48 kHz
  uint32_t chunk_ms = 0;            // 0: server default
  bool has_seed = false;
  uint64_t seed = 0;
};

struct Callbacks {
  // All run on the reader thread: keep them short (copy and hand off).
  std::function<void(const pb::SessionStarted&)> on_started;
  std::function<void(const pb::TimingMark&)> on_mark;
  std::function<void(const pb::UtteranceDone&)> on_utterance_done;
  std::function<void(const std::string& turn_id)> on_first_audio;  // first chunk of a turn
  std::function<void(const std::string& turn_id)> on_flush_done;
  std::function<void(const std::string& turn_id)> on_cancel_done;
};

// A channel to the service: plaintext when `ca_pem_file` is empty, else TLS checked against
// that CA (and `server_name`, when the address is not the certificate's name). A non-empty
// `api_key` rides on every call as `authorization: Bearer` (gRPC sends call credentials only
// over TLS, or over local credentials to this machine).
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address, const std::string& ca_pem_file = "",
                                           const std::string& server_name = "", const std::string& api_key = "");

// Computes and pins a voice's prompt cache on the server (call it at level load), so
// the first line of that voice starts as fast as later ones.
grpc::Status WarmVoice(const std::shared_ptr<grpc::Channel>& channel, const std::string& voice_id,
                       bool* was_cached = nullptr);

class Conversation {
 public:
  Conversation(std::shared_ptr<grpc::Channel> channel, SessionOptions options, RingBuffer* audio_out,
               Callbacks callbacks = {});
  ~Conversation();

  // Opens the stream, sends the config and waits (at most 10 s) for SessionStarted.
  grpc::Status Start();

  bool SendText(const std::string& text, const std::string& turn_id);
  bool Flush(const std::string& turn_id);
  // Barge-in: the server stops the turn ("" = every turn); audio, marks and UtteranceDone
  // of it still in flight are dropped here. Use a fresh turn id for the next turn.
  bool Cancel(const std::string& turn_id);
  // Finish what is buffered, end the stream, wait for the final status.
  grpc::Status Close();

  // Blocks until FlushDone / CancelDone for the turn (false on timeout or stream end).
  bool WaitFlushDone(const std::string& turn_id, int timeout_ms);
  bool WaitCancelDone(const std::string& turn_id, int timeout_ms);

  uint64_t samples_received() const { return samples_received_.load(); }
  uint64_t samples_dropped() const { return samples_dropped_.load(); }

 private:
  bool Write(const pb::ConverseRequest& request);
  void ReadLoop();
  bool WaitFor(std::set<std::string>& acks, const std::string& turn_id, int timeout_ms);
  bool Silenced(const std::string& turn_id) const;  // call with mutex_ held

  std::shared_ptr<pb::NpcVoice::Stub> stub_;
  SessionOptions options_;
  RingBuffer* audio_out_;
  Callbacks callbacks_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<pb::ConverseRequest, pb::ConverseResponse>> stream_;
  std::thread reader_;
  std::mutex write_mutex_;  // gRPC allows one writer at a time

  std::mutex mutex_;  // guards the sets below
  std::condition_variable changed_;
  std::set<std::string> flushed_, cancelled_, cancelling_, heard_;
  bool ended_ = false;
  bool started_ok_ = false;
  grpc::Status start_status_;

  std::atomic<uint64_t> samples_received_{0};
  std::atomic<uint64_t> samples_dropped_{0};
};

}  // namespace npc_voice
