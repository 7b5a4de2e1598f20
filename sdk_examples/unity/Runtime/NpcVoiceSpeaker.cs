// Unity component: one NPC's voice, streamed from the NPC voice service.
//
// Not compiled on our CI (it needs UnityEngine and NuGet packages); the logic it
// relies on (PcmRingBuffer, Pcm16, StreamResampler, VisemeMapper) is engine-free and
// is compiled and tested with mono's mcs. Requirements in the Unity project:
// - C# code generated from protos/npcvoice/v1/npc_voice.proto (Grpc.Tools), plus
//   Grpc.Net.Client and Google.Protobuf;
// - an HTTP/2 handler: Unity's HttpClient handler has no HTTP/2, which gRPC needs,
//   so use Cysharp's YetAnotherHttpHandler (MIT; native HTTP/2 via hyper, works on
//   desktop, mobile and consoles that allow native plugins).
using System;
using System.Collections.Concurrent;
using System.Threading;
using System.Threading.Tasks;
using Cysharp.Net.Http;
using Grpc.Core;
using Grpc.Net.Client;
using NpcVoice.V1;
using UnityEngine;
using UnityEngine.Events;

namespace NpcVoice
{
    [Serializable] public class VisemeUnityEvent : UnityEvent<Viseme, float> { } // viseme, weight 0..1

    [RequireComponent(typeof(AudioSource))]
    public sealed class NpcVoiceSpeaker : MonoBehaviour
    {
        public string serverAddress = "http://127.0.0.1:50051";
        public string voiceId = "guard";
        [Tooltip("Seconds of fade when interrupted, so barge-in does not click.")]
        public float interruptFade = 0.08f;
        public VisemeUnityEvent onViseme = new VisemeUnityEvent();

        private GrpcChannel _channel;
        private AsyncDuplexStreamingCall<ConverseRequest, ConverseResponse> _call;
        private CancellationTokenSource _cts;
        private PcmRingBuffer _ring;
        private StreamResampler _resampler;
        private int _outputRate;
        private readonly ConcurrentQueue<VisemeEvent> _visemes = new ConcurrentQueue<VisemeEvent>();
        private readonly ConcurrentDictionary<string, bool> _cancelled = new ConcurrentDictionary<string, bool>();
        private readonly SemaphoreSlim _writeLock = new SemaphoreSlim(1, 1);
        private readonly TaskCompletionSource<bool> _ready = new TaskCompletionSource<bool>(); // stream open
        private volatile bool _fadeOut;
        private float _gain = 1f;
        private double _playStartDsp = -1;   // AudioSettings.dspTime when the current utterance started playing
        private string _turn = "turn-0";
        private int _turnCount;

        private async void Start()
        {
            _outputRate = AudioSettings.outputSampleRate;
            _ring = new PcmRingBuffer(_outputRate * 30);
            // Ask for Unity's own rate (8-48 kHz) so no resampling is needed; 96 kHz
            // devices get 48 kHz from the server and are resampled here.
            int serverRate = Math.Min(48000, Math.Max(8000, _outputRate));
            _resampler = new StreamResampler(serverRate, _outputRate);
            _channel = GrpcChannel.ForAddress(serverAddress, new GrpcChannelOptions
            {
                HttpHandler = new YetAnotherHttpHandler { Http2Only = true },
                DisposeHttpClient = true,
            });
            var client = new NpcVoice.V1.NpcVoice.NpcVoiceClient(_channel);
            // The voice routing header: behind a load balancer with voice affinity, the
            // calls reach the replica whose prefix cache holds this voice.
            var route = new Metadata { { "x-npc-voice", voiceId } };
            await client.WarmVoiceAsync(new WarmVoiceRequest { VoiceId = voiceId }, route); // level load
            _cts = new CancellationTokenSource();
            _call = client.Converse(route, cancellationToken: _cts.Token);
            await Write(new ConverseRequest { Config = new SessionConfig {
                VoiceId = voiceId, SampleRateHz = (uint)serverRate, Encoding = AudioEncoding.Pcm16 } });
            _ready.TrySetResult(true);
            _ = Task.Run(ReadLoop);
        }

        /// <summary>Feed LLM output as it streams; call EndTurn when the reply is complete.</summary>
        public Task Say(string fragment) =>
            Send(new ConverseRequest { Text = new TextFragment { Text = fragment, TurnId = _turn } });

        public Task EndTurn() => Send(new ConverseRequest { Flush = new Flush { TurnId = _turn } });

        /// <summary>Barge-in: fade out now, drop the turn, and start a fresh one.</summary>
        public Task Interrupt()
        {
            string turn = _turn;
            _cancelled[turn] = true;
            _fadeOut = true;
            while (_visemes.TryDequeue(out _)) { }  // no lip movement for words never heard
            _playStartDsp = -1;
            _turn = $"turn-{++_turnCount}";
            return Send(new ConverseRequest { Cancel = new Cancel { TurnId = turn } });
        }

        // Say/EndTurn/Interrupt may be called before Start() has opened the stream.
        private async Task Send(ConverseRequest request)
        {
            await _ready.Task;
            await Write(request);
        }

        private async Task Write(ConverseRequest request)
        {
            await _writeLock.WaitAsync();
            try { await _call.RequestStream.WriteAsync(request); }
            finally { _writeLock.Release(); }
        }

        private async Task ReadLoop()
        {
            var pcm = new float[0];
            var resampled = new float[0];
            try
            {
                while (await _call.ResponseStream.MoveNext(_cts.Token))
                {
                    var r = _call.ResponseStream.Current;
                    if (r.KindCase == ConverseResponse.KindOneofCase.Audio && !_cancelled.ContainsKey(r.Audio.TurnId))
                    {
                        byte[] bytes = r.Audio.Audio.ToByteArray();
                        if (pcm.Length < bytes.Length / 2) pcm = new float[bytes.Length / 2];
                        int n = Pcm16.Decode(bytes, bytes.Length, pcm);
                        if (_resampler.IsIdentity) { _ring.Write(pcm, 0, n); continue; }
                        int max = _resampler.MaxOutput(n);
                        if (resampled.Length < max) resampled = new float[max];
                        _ring.Write(resampled, 0, _resampler.Process(pcm, n, resampled));
                    }
                    else if (r.KindCase == ConverseResponse.KindOneofCase.Mark && !_cancelled.ContainsKey(r.Mark.TurnId))
                    {
                        var m = r.Mark;
                        if (m.Kind == TimingKind.Phoneme)
                            _visemes.Enqueue(new VisemeEvent { Viseme = VisemeMapper.FromPhoneme(m.Text), StartMs = m.StartMs, EndMs = m.EndMs });
                    }
                }
            }
            catch (RpcException e) when (e.StatusCode != StatusCode.Cancelled)
            {
                Debug.LogError($"NPC voice stream ended: {e.Status.StatusCode}: {e.Status.Detail}");
            }
        }

        // Unity's audio thread: fill the mixer's buffer from the ring, fading on interrupt.
        private void OnAudioFilterRead(float[] data, int channels)
        {
            int frames = data.Length / channels;
            var mono = ScratchBuffer(frames);
            if (_fadeOut)
            {
                // Play out a short fade, then drop whatever of the cancelled turn is queued.
                int got = _ring.Read(mono, 0, frames);
                float step = 1f / Mathf.Max(1f, interruptFade * _outputRate);
                for (int i = 0; i < got; i++) { mono[i] *= _gain; _gain = Mathf.Max(0f, _gain - step); }
                Array.Clear(mono, got, frames - got);
                // Done when faded out, or when nothing was left to fade (the next turn starts clean).
                if (_gain <= 0f || got == 0) { _ring.Clear(); _fadeOut = false; _gain = 1f; }
                Spread(mono, data, channels, frames);
                return;
            }
            int read = _ring.Read(mono, 0, frames);
            Array.Clear(mono, read, frames - read); // an underrun plays silence
            Spread(mono, data, channels, frames);
        }

        private static void Spread(float[] mono, float[] data, int channels, int frames)
        {
            for (int i = 0; i < frames; i++)
                for (int c = 0; c < channels; c++) data[i * channels + c] = mono[i];
        }

        private float[] _scratch = new float[4096];
        private float[] ScratchBuffer(int n) => _scratch.Length >= n ? _scratch : (_scratch = new float[n]);

        // Game thread: raise viseme events when their time comes. (Timing marks are relative
        // to the utterance; a production rig aligns them to the samples played, see README.)
        private void Update()
        {
            while (_visemes.TryPeek(out var v))
            {
                if (_playStartDsp < 0) _playStartDsp = AudioSettings.dspTime;
                double due = _playStartDsp + v.StartMs / 1000.0;
                if (AudioSettings.dspTime < due) break;
                _visemes.TryDequeue(out v);
                onViseme.Invoke(v.Viseme, 1f);
            }
        }

        private void OnDestroy()
        {
            _cts?.Cancel();   // cancelling the call frees the server's work for this NPC at once
            _call?.Dispose();
            _channel?.Dispose();
        }
    }
}
