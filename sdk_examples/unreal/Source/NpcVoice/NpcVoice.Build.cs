// Unreal module rules (not built here). gRPC and protobuf come from a plugin or a
// ThirdParty module; see sdk_examples/unreal/README.md.
using UnrealBuildTool;

public class NpcVoice : ModuleRules
{
    public NpcVoice(ReadOnlyTargetRules Target) : base(Target)
    {
        PCHUsageMode = PCHUsageModeEnum.UseExplicitOrSharedPCHs;
        PublicDependencyModuleNames.AddRange(new[] { "Core", "CoreUObject", "Engine", "AudioMixer" });
        // The gRPC/protobuf ThirdParty module your project provides (e.g. from vcpkg or the
        // TurboLink plugin's bundled libraries), plus the tested core sources from sdk_examples/cpp.
        PublicDependencyModuleNames.Add("GrpcThirdParty");
        PublicIncludePaths.Add(System.IO.Path.Combine(ModuleDirectory, "../../../cpp/include"));
    }
}
