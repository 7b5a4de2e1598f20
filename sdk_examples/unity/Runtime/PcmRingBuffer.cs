// Single-producer single-consumer ring buffer of float samples.
// The network task writes; Unity's audio thread (OnAudioFilterRead) reads. No locks,
// no allocation after construction, so the audio thread is never blocked.
using System.Threading;

namespace NpcVoice
{
    public sealed class PcmRingBuffer
    {
        private readonly float[] _data;
        private readonly long _mask;
        private long _write; // only the producer stores it
        private long _read;  // only the consumer stores it

        public PcmRingBuffer(int minCapacity)
        {
            int cap = 1;
            while (cap < minCapacity) cap <<= 1;
            _data = new float[cap];
            _mask = cap - 1;
        }

        public int Capacity => _data.Length;

        public int Available => (int)(Volatile.Read(ref _write) - Volatile.Read(ref _read));

        /// <summary>Producer: copies up to count samples; returns how many fit.</summary>
        public int Write(float[] src, int offset, int count)
        {
            long w = _write;
            long r = Volatile.Read(ref _read);
            int room = _data.Length - (int)(w - r);
            if (count > room) count = room;
            for (int i = 0; i < count; i++) _data[(w + i) & _mask] = src[offset + i];
            Volatile.Write(ref _write, w + count);
            return count;
        }

        /// <summary>Consumer: copies up to count samples; returns how many were available.</summary>
        public int Read(float[] dst, int offset, int count)
        {
            long r = _read;
            long w = Volatile.Read(ref _write);
            int avail = (int)(w - r);
            if (count > avail) count = avail;
            for (int i = 0; i < count; i++) dst[offset + i] = _data[(r + i) & _mask];
            Volatile.Write(ref _read, r + count);
            return count;
        }

        /// <summary>Consumer only: drop everything queued (barge-in).</summary>
        public void Clear()
        {
            Volatile.Write(ref _read, Volatile.Read(ref _write));
        }
    }
}
