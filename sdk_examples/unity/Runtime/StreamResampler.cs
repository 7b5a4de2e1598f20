// Linear-interpolation resampler that keeps its phase across chunks, so chunked
// output equals one-shot output. Only needed when Unity's output rate differs from
// the rate the server was asked for; ask the server for AudioSettings.outputSampleRate
// (any rate from 8000 to 48000 Hz) and this is skipped. Linear interpolation is
// adequate for speech at these rates; it is not a mastering-grade filter.
using System;

namespace NpcVoice
{
    public sealed class StreamResampler
    {
        private readonly double _step; // input samples per output sample
        // Position of the next output sample in the sequence [_prev, chunk...]:
        // 0 is the last sample of the previous chunk, 1 the first of this one.
        private double _pos = 1.0;
        private float _prev;

        public StreamResampler(int inRate, int outRate)
        {
            if (inRate <= 0 || outRate <= 0) throw new ArgumentException("rates must be positive");
            _step = (double)inRate / outRate;
        }

        public bool IsIdentity => Math.Abs(_step - 1.0) < 1e-12;

        /// <summary>Output samples Process can write for count input samples, at most.</summary>
        public int MaxOutput(int count) => (int)Math.Ceiling((count + 1) / _step) + 1;

        /// <summary>Resamples src[0..count) into dst; returns the number of output samples.</summary>
        public int Process(float[] src, int count, float[] dst)
        {
            if (IsIdentity)
            {
                Array.Copy(src, dst, count);
                return count;
            }
            int n = 0;
            while (n < dst.Length)
            {
                int i = (int)Math.Floor(_pos);
                double frac = _pos - i;
                if (i > count || (i == count && frac > 1e-9)) break; // needs the next chunk
                float a = i == 0 ? _prev : src[i - 1];
                float b = i < count ? src[i] : a;
                dst[n++] = (float)(a + (b - a) * frac);
                _pos += _step;
            }
            _pos -= count;
            if (count > 0) _prev = src[count - 1];
            return n;
        }
    }
}
