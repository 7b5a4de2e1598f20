// Tests for the engine-free logic, compiled and run without Unity or NuGet:
//   mcs -out:logic_tests.exe Runtime/PcmRingBuffer.cs Runtime/Pcm16.cs Runtime/StreamResampler.cs \
//       Runtime/VisemeMapper.cs Tests/LogicTests.cs && mono logic_tests.exe
using System;
using System.Collections.Generic;
using System.Threading;
using NpcVoice;

public static class LogicTests
{
    private static int _failed;

    private static void Check(bool ok, string what)
    {
        Console.WriteLine((ok ? "ok    " : "FAIL  ") + what);
        if (!ok) _failed++;
    }

    private static void RingBufferKeepsOrderAcrossThreads()
    {
        var ring = new PcmRingBuffer(1000);
        Check(ring.Capacity == 1024, "capacity rounds up to a power of two");
        const int total = 200000;
        bool inOrder = true;
        var consumer = new Thread(() =>
        {
            var buf = new float[97];
            int expected = 0;
            while (expected < total)
            {
                int n = ring.Read(buf, 0, buf.Length);
                for (int i = 0; i < n; i++)
                {
                    if (buf[i] != expected) inOrder = false;
                    expected++;
                }
                if (n == 0) Thread.Yield();
            }
        });
        consumer.Start();
        var chunk = new float[131];
        int next = 0;
        while (next < total)
        {
            int n = Math.Min(chunk.Length, total - next);
            for (int i = 0; i < n; i++) chunk[i] = next + i;
            int written = 0;
            while (written < n)
            {
                int w = ring.Write(chunk, written, n - written);
                written += w;
                if (w == 0) Thread.Yield();
            }
            next += n;
        }
        consumer.Join();
        Check(inOrder, "200k samples cross threads in order, none lost or repeated");
    }

    private static void RingBufferBoundsAndClear()
    {
        var ring = new PcmRingBuffer(8);
        var src = new float[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 };
        Check(ring.Write(src, 0, 10) == 8, "a full buffer takes only what fits");
        Check(ring.Available == 8, "available counts queued samples");
        ring.Clear();
        Check(ring.Available == 0, "clear drops everything (barge-in)");
        var dst = new float[4];
        Check(ring.Read(dst, 0, 4) == 0, "reading an empty buffer returns 0 (an underrun)");
    }

    private static void Pcm16DecodesLittleEndian()
    {
        var bytes = new byte[] { 0x00, 0x00, 0xFF, 0x7F, 0x00, 0x80, 0x00, 0x40 };
        var dst = new float[4];
        int n = Pcm16.Decode(bytes, bytes.Length, dst);
        Check(n == 4 && dst[0] == 0f && Math.Abs(dst[1] - 32767f / 32768f) < 1e-6 && dst[2] == -1f && dst[3] == 0.5f,
              "PCM16 little-endian decodes to [-1, 1)");
    }

    private static void ResamplerIsChunkInvariant()
    {
        const int inRate = 48000, outRate = 44100;
        var signal = new float[4800];
        for (int i = 0; i < signal.Length; i++) signal[i] = (float)Math.Sin(2 * Math.PI * 440 * i / inRate);
        var whole = Run(new StreamResampler(inRate, outRate), signal, new[] { signal.Length });
        var chunked = Run(new StreamResampler(inRate, outRate), signal, new[] { 1, 7, 480, 13, 2000, 999, 1300 });
        bool same = whole.Count == chunked.Count;
        for (int i = 0; same && i < whole.Count; i++) same = Math.Abs(whole[i] - chunked[i]) < 1e-6;
        Check(same, "chunked resampling equals one-shot resampling");
        Check(Math.Abs(whole.Count - signal.Length * (double)outRate / inRate) <= 2, "output length follows the rate ratio");
        double err = 0;
        for (int i = 0; i < whole.Count; i++) err = Math.Max(err, Math.Abs(whole[i] - Math.Sin(2 * Math.PI * 440 * i / (double)outRate)));
        Check(err < 0.01, $"resampled sine stays within 1% of the ideal one (max error {err:0.0000})");
        Check(new StreamResampler(48000, 48000).IsIdentity, "equal rates need no resampling");
    }

    private static List<float> Run(StreamResampler r, float[] signal, int[] sizes)
    {
        var output = new List<float>();
        int pos = 0, k = 0;
        while (pos < signal.Length)
        {
            int n = Math.Min(sizes[k++ % sizes.Length], signal.Length - pos);
            var chunk = new float[n];
            Array.Copy(signal, pos, chunk, 0, n);
            var dst = new float[r.MaxOutput(n)];
            int m = r.Process(chunk, n, dst);
            for (int i = 0; i < m; i++) output.Add(dst[i]);
            pos += n;
        }
        return output;
    }

    private static void VisemesFromMarks()
    {
        Check(VisemeMapper.FromPhoneme("p") == Viseme.PP && VisemeMapper.FromPhoneme("ð") == Viseme.TH &&
              VisemeMapper.FromPhoneme("ˈɑ") == Viseme.aa && VisemeMapper.FromPhoneme("ʃ") == Viseme.CH,
              "IPA phonemes map to OVR visemes");
        Check(VisemeMapper.FromPhoneme("AA1") == Viseme.aa && VisemeMapper.FromPhoneme("SH") == Viseme.CH &&
              VisemeMapper.FromPhoneme("UW0") == Viseme.ou, "ARPAbet with stress digits maps too");
        Check(VisemeMapper.FromPhoneme("m") == Viseme.PP && VisemeMapper.FromPhoneme(" ") == Viseme.sil &&
              VisemeMapper.FromPhoneme("!") == Viseme.sil, "letters map by spelling; space and punctuation are silence");
        var word = VisemeMapper.FromWord("Hello", 100, 600);
        Check(word.Count == 4 && word[0].Viseme == Viseme.nn && word[2].Viseme == Viseme.nn &&
              word[2].EndMs == 500 && word[3].Viseme == Viseme.oh && word[3].EndMs == 600,
              "a word mark spreads over its letters, doubled letters merged: " + string.Join(" ", word));
    }

    public static int Main()
    {
        RingBufferKeepsOrderAcrossThreads();
        RingBufferBoundsAndClear();
        Pcm16DecodesLittleEndian();
        ResamplerIsChunkInvariant();
        VisemesFromMarks();
        Console.WriteLine(_failed == 0 ? "ALL PASSED" : $"{_failed} FAILED");
        return _failed == 0 ? 0 : 1;
    }
}
