// PCM16 little-endian bytes (as the server sends them) to float samples.
namespace NpcVoice
{
    public static class Pcm16
    {
        /// <summary>Decodes bytes into dst (which must hold bytes.Length / 2 floats); returns the sample count.</summary>
        public static int Decode(byte[] bytes, int byteCount, float[] dst)
        {
            int n = byteCount / 2;
            for (int i = 0; i < n; i++)
            {
                short v = (short)(bytes[2 * i] | (bytes[2 * i + 1] << 8));
                dst[i] = v / 32768f;
            }
            return n;
        }
    }
}
