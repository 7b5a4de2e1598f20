#include "npc_voice/conversation.h"

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include <grpcpp/security/credentials.h>

namespace npc_voice {

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address, const std::string& ca_pem_file,
                                           const std::string& server_name, const std::string& api_key) {
  if (ca_pem_file.empty() && api_key.empty()) return grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (!ca_pem_file.empty()) {
    std::ifstream in(ca_pem_file);
    std::stringstream pem;
    pem << in.rdbuf();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = pem.str();
    creds = grpc::SslCredentials(ssl);
  } else {
    creds = grpc::experimental::LocalCredentials(LOCAL_TCP);
  }
  if (!api_key.empty()) creds = grpc::CompositeChannelCredentials(creds, grpc::AccessTokenCredentials(api_key));
  grpc::ChannelArguments args;
  if (!server_name.empty()) args.SetSslTargetNameOverride(server_name);
  return grpc::CreateCustomChannel(address, creds, args);
}

namespace {
const char kVoiceHeader[] = "x-npc-voice";
}  // namespace

grpc::Status WarmVoice(const std::shared_ptr<grpc::Channel>& channel, const std::string& voice_id,
                       bool* was_cached) {
  auto stub = pb::NpcVoice::NewStub(channel);
  grpc::ClientContext context;
  context.AddMetadata(kVoiceHeader, voice_id);  // behind a balancer: the replica that will speak it
  pb::WarmVoiceRequest request;
  request.set_voice_id(voice_id);
  pb::WarmVoiceResponse response;
  grpc::Status status = stub->WarmVoice(&context, request, &response);
  if (status.ok() && was_cached) *was_cached = response.was_cached();
  return status;
}

Conversation::Conversation(std::shared_ptr<grpc::Channel> channel, SessionOptions options, RingBuffer* audio_out,
                           Callbacks callbacks)
    : stub_(pb::NpcVoice::NewStub(channel)),
      options_(std::move(options)),
      audio_out_(audio_out),
      callbacks_(std::move(callbacks)) {}

Conversation::~Conversation() {
  context_.TryCancel();  // unblocks the reader if Close() was never called
  if (reader_.joinable()) reader_.join();
}

grpc::Status Conversation::Start() {
  // Behind a load balancer with voice affinity (deploy/nginx.conf), this header sends the
  // conversation to the replica whose prefix cache holds the voice.
  context_.AddMetadata(kVoiceHeader, options_.voice_id);
  stream_ = stub_->Converse(&context_);
  pb::ConverseRequest request;
  auto* config = request.mutable_config();
  config->set_voice_id(options_.voice_id);
  config->set_sample_rate_hz(options_.sample_rate_hz);
  config->set_encoding(pb::PCM16);
  config->set_chunk_ms(options_.chunk_ms);
  if (options_.has_seed) config->mutable_sampling()->set_seed(options_.seed);
  if (!Write(request)) return stream_->Finish();
  reader_ = std::thread([this] { ReadLoop(); });
  std::unique_lock<std::mutex> lock(mutex_);
  if (!changed_.wait_for(lock, std::chrono::seconds(10), [this] { return started_ok_ || ended_; })) {
    context_.TryCancel();
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "no SessionStarted within 10 s");
  }
  return started_ok_ ? grpc::Status::OK : start_status_;
}

bool Conversation::Write(const pb::ConverseRequest& request) {
  std::lock_guard<std::mutex> lock(write_mutex_);
  return stream_->Write(request);
}

bool Conversation::SendText(const std::string& text, const std::string& turn_id) {
  pb::ConverseRequest request;
  request.mutable_text()->set_text(text);
  request.mutable_text()->set_turn_id(turn_id);
  return Write(request);
}

bool Conversation::Flush(const std::string& turn_id) {
  pb::ConverseRequest request;
  request.mutable_flush()->set_turn_id(turn_id);
  return Write(request);
}

bool Conversation::Cancel(const std::string& turn_id) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    cancelling_.insert(turn_id);  // from now on, audio of this turn ("" = all) is not played
  }
  pb::ConverseRequest request;
  request.mutable_cancel()->set_turn_id(turn_id);
  return Write(request);
}

grpc::Status Conversation::Close() {
  pb::ConverseRequest request;
  request.mutable_close();
  Write(request);
  {
    std::lock_guard<std::mutex> lock(write_mutex_);
    stream_->WritesDone();
  }
  if (reader_.joinable()) reader_.join();
  return start_status_;
}

bool Conversation::WaitFor(std::set<std::string>& acks, const std::string& turn_id, int timeout_ms) {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return acks.count(turn_id) > 0 || ended_; });
  return acks.erase(turn_id) > 0;  // consumed: a later wait on the same id waits for a new ack
}

bool Conversation::Silenced(const std::string& turn_id) const {
  return cancelling_.count(turn_id) > 0 || cancelling_.count("") > 0;
}

bool Conversation::WaitFlushDone(const std::string& turn_id, int timeout_ms) {
  return WaitFor(flushed_, turn_id, timeout_ms);
}

bool Conversation::WaitCancelDone(const std::string& turn_id, int timeout_ms) {
  return WaitFor(cancelled_, turn_id, timeout_ms);
}

void Conversation::ReadLoop() {
  pb::ConverseResponse response;
  std::vector<float> samples;
  while (stream_->Read(&response)) {
    switch (response.kind_case()) {
      case pb::ConverseResponse::kStarted: {
        if (callbacks_.on_started) callbacks_.on_started(response.started());
        std::lock_guard<std::mutex> lock(mutex_);
        started_ok_ = true;
        changed_.notify_all();
        break;
      }
      case pb::ConverseResponse::kAudio: {
        const auto& chunk = response.audio();
        bool first = false;
        {
          std::lock_guard<std::mutex> lock(mutex_);
          if (Silenced(chunk.turn_id())) break;  // barge-in: never play it
          first = heard_.insert(chunk.turn_id()).second;
        }
        const std::string& bytes = chunk.audio();
        samples.resize(bytes.size() / 2);
        for (size_t i = 0; i < samples.size(); ++i) {
          int16_t v;  // PCM16 little-endian; this client targets little-endian machines
          std::memcpy(&v, bytes.data() + 2 * i, 2);
          samples[i] = static_cast<float>(v) / 32768.0f;
        }
        const size_t written = audio_out_->Write(samples.data(), samples.size());
        samples_received_ += samples.size();
        samples_dropped_ += samples.size() - written;
        if (first && callbacks_.on_first_audio) callbacks_.on_first_audio(chunk.turn_id());
        break;
      }
      case pb::ConverseResponse::kMark: {
        bool silenced;
        {
          std::lock_guard<std::mutex> lock(mutex_);
          silenced = Silenced(response.mark().turn_id());
        }
        if (!silenced && callbacks_.on_mark) callbacks_.on_mark(response.mark());  // no visemes after barge-in
        break;
      }
      case pb::ConverseResponse::kUtteranceDone: {
        bool silenced;
        {
          std::lock_guard<std::mutex> lock(mutex_);
          silenced = Silenced(response.utterance_done().turn_id());
        }
        if (!silenced && callbacks_.on_utterance_done) callbacks_.on_utterance_done(response.utterance_done());
        break;
      }
      case pb::ConverseResponse::kFlushDone: {
        if (callbacks_.on_flush_done) callbacks_.on_flush_done(response.flush_done().turn_id());
        std::lock_guard<std::mutex> lock(mutex_);
        flushed_.insert(response.flush_done().turn_id());
        changed_.notify_all();
        break;
      }
      case pb::ConverseResponse::kCancelDone: {
        if (callbacks_.on_cancel_done) callbacks_.on_cancel_done(response.cancel_done().turn_id());
        std::lock_guard<std::mutex> lock(mutex_);
        cancelled_.insert(response.cancel_done().turn_id());
        // Nothing of the turn follows its CancelDone (the server guarantees it), so the
        // filter can go; the server also ignores text sent later under a cancelled id.
        cancelling_.erase(response.cancel_done().turn_id());
        changed_.notify_all();
        break;
      }
      default:
        break;
    }
  }
  grpc::Status status = stream_->Finish();
  std::lock_guard<std::mutex> lock(mutex_);
  start_status_ = status;
  ended_ = true;
  changed_.notify_all();
}

}  // namespace npc_voice
