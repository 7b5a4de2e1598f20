// Unreal wrapper around the tested C++ core in sdk_examples/cpp (npc_voice::Conversation).
// NOT compiled here: Unreal cannot be built on our CI. Keep this layer thin; the
// streaming, ring buffer and barge-in logic live in the core, which is built and
// tested against a real server by tests/test_sdk_cpp.py.
#pragma once

#include "Components/ActorComponent.h"
#include "CoreMinimal.h"
#include "HAL/CriticalSection.h"
#include "Sound/SoundWaveProcedural.h"

#include <memory>
#include <string>

#include "NpcVoiceComponent.generated.h"

namespace npc_voice { class Conversation; class RingBuffer; }
class UAudioComponent;

// OVR LipSync's 15 visemes, the set most character rigs are authored for.
UENUM(BlueprintType)
enum class ENpcViseme : uint8 { Sil, PP, FF, TH, DD, KK, CH, SS, NN, RR, AA, E, IH, OH, OU };

DECLARE_DYNAMIC_MULTICAST_DELEGATE_ThreeParams(FOnNpcViseme, ENpcViseme, Viseme, float, StartSeconds, float, EndSeconds);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_OneParam(FOnNpcTurnFinished, const FString&, TurnId);

UCLASS(ClassGroup = (Audio), meta = (BlueprintSpawnableComponent))
class UNpcVoiceComponent : public UActorComponent {
  GENERATED_BODY()

 public:
  UNpcVoiceComponent();

  UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "NPC Voice") FString ServerAddress = TEXT("127.0.0.1:50051");
  UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "NPC Voice") FString VoiceId = TEXT("guard");
  UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "NPC Voice") float InterruptFadeSeconds = 0.08f;

  // Lip sync: one event per viseme, in game time, as its audio starts playing.
  UPROPERTY(BlueprintAssignable, Category = "NPC Voice") FOnNpcViseme OnViseme;
  UPROPERTY(BlueprintAssignable, Category = "NPC Voice") FOnNpcTurnFinished OnTurnFinished;

  // Feed an LLM token stream: call Say for each token, EndTurn when the reply is done.
  UFUNCTION(BlueprintCallable, Category = "NPC Voice") void Say(const FString& Fragment);
  UFUNCTION(BlueprintCallable, Category = "NPC Voice") void EndTurn();
  // Barge-in: fade out, drop the rest of the turn, start a new one.
  UFUNCTION(BlueprintCallable, Category = "NPC Voice") void Interrupt();

 protected:
  virtual void BeginPlay() override;
  virtual void EndPlay(const EEndPlayReason::Type Reason) override;
  virtual void TickComponent(float DeltaTime, ELevelTick TickType, FActorComponentTickFunction* Tick) override;

 private:
  void PumpAudio();  // ring buffer -> USoundWaveProcedural, on the game thread

  std::unique_ptr<npc_voice::RingBuffer> Ring;
  std::unique_ptr<npc_voice::Conversation> Conversation;
  UPROPERTY() USoundWaveProcedural* Wave = nullptr;
  UPROPERTY() UAudioComponent* Audio = nullptr;

  FCriticalSection MarksLock;  // marks arrive on the gRPC reader thread
  struct FPendingViseme { ENpcViseme Viseme; float StartMs; float EndMs; };
  TArray<FPendingViseme> PendingVisemes;
  double UtteranceStartTime = -1.0;
  FString Turn = TEXT("turn-0");
  int32 TurnCount = 0;
  float Gain = 1.f;
  bool bFading = false;
  TArray<float> Scratch;
  TArray<int16> Pcm;
};
