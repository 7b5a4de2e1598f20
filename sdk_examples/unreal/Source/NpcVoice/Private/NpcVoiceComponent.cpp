// See NpcVoiceComponent.h. Not compiled here (no Unreal on CI); the core it wraps is.
#include "NpcVoiceComponent.h"

#include "Components/AudioComponent.h"
#include "npc_voice/conversation.h"

namespace {
constexpr int32 kRate = 48000;  // Unreal's mixer rate; the server streams at it, no resampling
constexpr int32 kBlock = kRate / 100;  // push 10 ms at a time

ENpcViseme FromPhoneme(const std::string& p) {
  // Same table as sdk_examples/unity/Runtime/VisemeMapper.cs (which is unit-tested);
  // a short subset here to keep the wrapper thin.
  static const std::pair<const char*, ENpcViseme> kTable[] = {
      {"p", ENpcViseme::PP}, {"b", ENpcViseme::PP}, {"m", ENpcViseme::PP}, {"f", ENpcViseme::FF},
      {"v", ENpcViseme::FF}, {"θ", ENpcViseme::TH}, {"ð", ENpcViseme::TH}, {"t", ENpcViseme::DD},
      {"d", ENpcViseme::DD}, {"k", ENpcViseme::KK}, {"ɡ", ENpcViseme::KK}, {"ʃ", ENpcViseme::CH},
      {"ʧ", ENpcViseme::CH}, {"s", ENpcViseme::SS}, {"z", ENpcViseme::SS}, {"n", ENpcViseme::NN},
      {"l", ENpcViseme::NN}, {"ɹ", ENpcViseme::RR}, {"ɑ", ENpcViseme::AA}, {"æ", ENpcViseme::AA},
      {"ɛ", ENpcViseme::E}, {"ə", ENpcViseme::E}, {"i", ENpcViseme::IH}, {"ɪ", ENpcViseme::IH},
      {"o", ENpcViseme::OH}, {"ɔ", ENpcViseme::OH}, {"u", ENpcViseme::OU}, {"ʊ", ENpcViseme::OU},
      {"a", ENpcViseme::AA}, {"e", ENpcViseme::E}, {"w", ENpcViseme::OU}, {"r", ENpcViseme::RR}};
  for (const auto& [sym, vis] : kTable) if (p == sym) return vis;
  return ENpcViseme::Sil;
}
}  // namespace

UNpcVoiceComponent::UNpcVoiceComponent() { PrimaryComponentTick.bCanEverTick = true; }

void UNpcVoiceComponent::BeginPlay() {
  Super::BeginPlay();
  Wave = NewObject<USoundWaveProcedural>(this);
  Wave->SetSampleRate(kRate);
  Wave->NumChannels = 1;
  Wave->Duration = INDEFINITELY_LOOPING_DURATION;
  Wave->bLooping = false;
  Audio = NewObject<UAudioComponent>(GetOwner());
  Audio->SetSound(Wave);
  Audio->RegisterComponent();
  Audio->Play();

  Ring = std::make_unique<npc_voice::RingBuffer>(kRate * 30);
  npc_voice::Callbacks cb;
  cb.on_mark = [this](const npc_voice::pb::TimingMark& m) {
    if (m.kind() != npc_voice::pb::PHONEME) return;
    FScopeLock Lock(&MarksLock);
    PendingVisemes.Add({FromPhoneme(m.text()), float(m.start_ms()), float(m.end_ms())});
  };
  TWeakObjectPtr<UNpcVoiceComponent> Weak(this);  // the component may be gone when the task runs
  cb.on_flush_done = [Weak](const std::string& turn) {
    const FString Id(UTF8_TO_TCHAR(turn.c_str()));
    AsyncTask(ENamedThreads::GameThread, [Weak, Id] {
      if (UNpcVoiceComponent* Self = Weak.Get()) {
        Self->UtteranceStartTime = -1.0;  // the next turn's marks count from its own start
        Self->OnTurnFinished.Broadcast(Id);
      }
    });
  };
  npc_voice::SessionOptions options;
  options.voice_id = TCHAR_TO_UTF8(*VoiceId);
  options.sample_rate_hz = kRate;
  Conversation = std::make_unique<npc_voice::Conversation>(
      grpc::CreateChannel(TCHAR_TO_UTF8(*ServerAddress), grpc::InsecureChannelCredentials()), options, Ring.get(), cb);
  // Start() blocks until SessionStarted; a shipping game would run it off the game thread.
  const grpc::Status Status = Conversation->Start();
  if (!Status.ok()) {
    UE_LOG(LogTemp, Error, TEXT("NPC voice: %hs"), Status.error_message().c_str());
    Conversation.reset();
  }
}

void UNpcVoiceComponent::Say(const FString& Fragment) {
  if (Conversation) Conversation->SendText(TCHAR_TO_UTF8(*Fragment), TCHAR_TO_UTF8(*Turn));
}

void UNpcVoiceComponent::EndTurn() {
  if (Conversation) Conversation->Flush(TCHAR_TO_UTF8(*Turn));
}

void UNpcVoiceComponent::Interrupt() {
  if (!Conversation) return;
  Conversation->Cancel(TCHAR_TO_UTF8(*Turn));  // the core drops audio of this turn still in flight
  Turn = FString::Printf(TEXT("turn-%d"), ++TurnCount);
  bFading = true;
  FScopeLock Lock(&MarksLock);
  PendingVisemes.Reset();
}

void UNpcVoiceComponent::TickComponent(float DeltaTime, ELevelTick TickType, FActorComponentTickFunction* Tick) {
  Super::TickComponent(DeltaTime, TickType, Tick);
  PumpAudio();
  const double Now = GetWorld()->GetTimeSeconds();
  FScopeLock Lock(&MarksLock);
  if (UtteranceStartTime < 0 && PendingVisemes.Num() > 0) UtteranceStartTime = Now;
  while (PendingVisemes.Num() > 0 && Now >= UtteranceStartTime + PendingVisemes[0].StartMs / 1000.0) {
    const FPendingViseme V = PendingVisemes[0];
    PendingVisemes.RemoveAt(0);
    OnViseme.Broadcast(V.Viseme, V.StartMs / 1000.f, V.EndMs / 1000.f);
  }
}

void UNpcVoiceComponent::PumpAudio() {
  // Keep ~100 ms queued in the procedural wave whatever the frame rate: move 10 ms
  // blocks until it holds that much or the ring is empty. QueueAudio copies.
  if (!Ring) return;
  Scratch.SetNumUninitialized(kBlock);
  Pcm.SetNumUninitialized(kBlock);
  const float Step = 1.f / FMath::Max(1.f, InterruptFadeSeconds * kRate);
  while (Wave->GetAvailableAudioByteCount() < kRate / 10 * int32(sizeof(int16))) {
    const int32 Got = int32(Ring->Read(Scratch.GetData(), kBlock));
    if (Got == 0) {
      if (bFading) { bFading = false; Gain = 1.f; }  // nothing left to fade: the next turn starts clean
      return;
    }
    for (int32 i = 0; i < Got; ++i) {
      float S = Scratch[i];
      if (bFading) { S *= Gain; Gain = FMath::Max(0.f, Gain - Step); }
      Pcm[i] = int16(FMath::Clamp(S, -1.f, 1.f) * 32767.f);
    }
    Wave->QueueAudio(reinterpret_cast<const uint8*>(Pcm.GetData()), Got * sizeof(int16));
    if (bFading && Gain <= 0.f) { Ring->Clear(); bFading = false; Gain = 1.f; UtteranceStartTime = -1.0; return; }
  }
}

void UNpcVoiceComponent::EndPlay(const EEndPlayReason::Type Reason) {
  if (Conversation) Conversation.reset();  // cancels the call: the server frees this NPC's work at once
  Super::EndPlay(Reason);
}
