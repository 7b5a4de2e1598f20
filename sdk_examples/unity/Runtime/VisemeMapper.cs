// Timing marks -> visemes for lip sync.
//
// Viseme set: the 15 Oculus/OVR LipSync visemes (sil, PP, FF, TH, DD, kk, CH, SS,
// nn, RR, aa, E, ih, oh, ou), which most character rigs and the Meta/OVR plugins use.
// A PHONEME mark carries an IPA symbol (or ARPAbet) when the model has a phoneme
// front end; with a character-level model it carries a letter, which is mapped by
// spelling. WORD marks can be expanded letter by letter the same way when a model
// sends only words.
using System;
using System.Collections.Generic;

namespace NpcVoice
{
    public enum Viseme { sil, PP, FF, TH, DD, kk, CH, SS, nn, RR, aa, E, ih, oh, ou }

    public struct VisemeEvent
    {
        public Viseme Viseme;
        public float StartMs;
        public float EndMs;
        public override string ToString() => $"{Viseme}@{StartMs:0}-{EndMs:0}";
    }

    public static class VisemeMapper
    {
        // IPA symbols (as produced by common English G2P front ends) and ARPAbet.
        private static readonly Dictionary<string, Viseme> Phonemes = new Dictionary<string, Viseme>(StringComparer.Ordinal)
        {
            {"p", Viseme.PP}, {"b", Viseme.PP}, {"m", Viseme.PP},
            {"f", Viseme.FF}, {"v", Viseme.FF},
            {"θ", Viseme.TH}, {"ð", Viseme.TH},
            {"t", Viseme.DD}, {"d", Viseme.DD}, {"ɾ", Viseme.DD},
            {"k", Viseme.kk}, {"g", Viseme.kk}, {"ɡ", Viseme.kk}, {"ŋ", Viseme.kk},
            {"ʧ", Viseme.CH}, {"ʤ", Viseme.CH}, {"ʃ", Viseme.CH}, {"ʒ", Viseme.CH}, {"tʃ", Viseme.CH}, {"dʒ", Viseme.CH},
            {"s", Viseme.SS}, {"z", Viseme.SS},
            {"n", Viseme.nn}, {"l", Viseme.nn}, {"h", Viseme.nn},
            {"ɹ", Viseme.RR}, {"r", Viseme.RR}, {"ɚ", Viseme.RR}, {"ɝ", Viseme.RR},
            {"ɑ", Viseme.aa}, {"a", Viseme.aa}, {"æ", Viseme.aa}, {"ʌ", Viseme.aa}, {"aɪ", Viseme.aa}, {"aʊ", Viseme.aa},
            {"e", Viseme.E}, {"ɛ", Viseme.E}, {"eɪ", Viseme.E}, {"ə", Viseme.E}, {"ᵊ", Viseme.E},
            // misaki's one-letter diphthongs: A = eɪ, I = aɪ, O = oʊ, W = aʊ, Y = ɔɪ
            {"A", Viseme.E}, {"I", Viseme.aa}, {"O", Viseme.oh}, {"W", Viseme.aa}, {"Y", Viseme.oh},
            {"i", Viseme.ih}, {"ɪ", Viseme.ih}, {"j", Viseme.ih},
            {"o", Viseme.oh}, {"ɔ", Viseme.oh}, {"oʊ", Viseme.oh}, {"ɒ", Viseme.oh},
            {"u", Viseme.ou}, {"ʊ", Viseme.ou}, {"w", Viseme.ou},
            // ARPAbet (stress digits are stripped below); its one-letter W and Y clash with
            // misaki's and take misaki's meaning above.
            {"P", Viseme.PP}, {"B", Viseme.PP}, {"M", Viseme.PP}, {"F", Viseme.FF}, {"V", Viseme.FF},
            {"TH", Viseme.TH}, {"DH", Viseme.TH}, {"T", Viseme.DD}, {"D", Viseme.DD}, {"K", Viseme.kk},
            {"G", Viseme.kk}, {"NG", Viseme.kk}, {"CH", Viseme.CH}, {"JH", Viseme.CH}, {"SH", Viseme.CH},
            {"ZH", Viseme.CH}, {"S", Viseme.SS}, {"Z", Viseme.SS}, {"N", Viseme.nn}, {"L", Viseme.nn},
            {"HH", Viseme.nn}, {"R", Viseme.RR}, {"ER", Viseme.RR}, {"AA", Viseme.aa}, {"AE", Viseme.aa},
            {"AH", Viseme.aa}, {"AY", Viseme.aa}, {"AW", Viseme.aa}, {"EH", Viseme.E}, {"EY", Viseme.E},
            {"IH", Viseme.ih}, {"IY", Viseme.ih}, {"AO", Viseme.oh}, {"OW", Viseme.oh},
            {"OY", Viseme.oh}, {"UH", Viseme.ou}, {"UW", Viseme.ou},
        };

        /// <summary>The viseme of one phoneme mark's text: IPA, ARPAbet, or a single letter.</summary>
        public static Viseme FromPhoneme(string symbol)
        {
            if (string.IsNullOrEmpty(symbol)) return Viseme.sil;
            string s = symbol.Trim().TrimEnd('0', '1', '2').Trim('ˈ', 'ˌ', 'ː');
            if (s.Length == 0) return Viseme.sil;
            if (Phonemes.TryGetValue(s, out var v)) return v;
            if (s.Length == 1 && char.IsLetter(s[0])) return FromLetter(s[0]);
            // Multi-symbol IPA not listed (e.g. "oʊ" variants): use its first symbol.
            return Phonemes.TryGetValue(s.Substring(0, 1), out v) ? v : Viseme.sil;
        }

        /// <summary>Spelling fallback for character-level marks.</summary>
        public static Viseme FromLetter(char c)
        {
            switch (char.ToLowerInvariant(c))
            {
                case 'p': case 'b': case 'm': return Viseme.PP;
                case 'f': case 'v': return Viseme.FF;
                case 't': case 'd': return Viseme.DD;
                case 'k': case 'g': case 'q': case 'c': case 'x': return Viseme.kk;
                case 'j': return Viseme.CH;
                case 's': case 'z': return Viseme.SS;
                case 'n': case 'l': case 'h': return Viseme.nn;
                case 'r': return Viseme.RR;
                case 'a': return Viseme.aa;
                case 'e': return Viseme.E;
                case 'i': case 'y': return Viseme.ih;
                case 'o': return Viseme.oh;
                case 'u': case 'w': return Viseme.ou;
                default: return Viseme.sil;
            }
        }

        /// <summary>A word mark spread evenly over its letters (for models that time only words).</summary>
        public static List<VisemeEvent> FromWord(string word, float startMs, float endMs)
        {
            var letters = new List<char>();
            foreach (char c in word) if (char.IsLetter(c)) letters.Add(c);
            var events = new List<VisemeEvent>();
            if (letters.Count == 0) return events;
            float step = (endMs - startMs) / letters.Count;
            for (int i = 0; i < letters.Count; i++)
            {
                var v = FromLetter(letters[i]);
                // Doubled letters ("ll") are one mouth shape: extend the previous event.
                if (events.Count > 0 && events[events.Count - 1].Viseme == v)
                {
                    var last = events[events.Count - 1];
                    last.EndMs = startMs + step * (i + 1);
                    events[events.Count - 1] = last;
                    continue;
                }
                events.Add(new VisemeEvent { Viseme = v, StartMs = startMs + step * i, EndMs = startMs + step * (i + 1) });
            }
            return events;
        }
    }
}
